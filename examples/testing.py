"""Testing an app's tasks with pytest, httpx and the anyio plugin.

Run it with ``pytest examples/testing.py``. The pieces:

* ``httpx.ASGITransport`` calls the app in process (it does not run the app's lifespan,
  so the fixture starts the manager with ``async with task_manager``);
* a ``MemoryObserver`` records every event;
* a ``ManualClock`` makes retry delays pass when the test says so;
* ``wait_for`` polls with a deadline instead of sleeping for a fixed time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI

from fastapi_taskflow import (
    ManagedBackgroundTasks,
    MemoryObserver,
    TaskManager,
    TaskRecord,
    TaskStatus,
)
from fastapi_taskflow.clock import ManualClock

# -- the application under test ---------------------------------------------------------

clock = ManualClock()
observer = MemoryObserver()
# poll_interval: how often an idle queue looks for due tasks, i.e. how soon a retry
# notices that the ManualClock moved past its delay.
task_manager = TaskManager(observers=[observer], clock=clock, poll_interval=0.02)
app = FastAPI()
task_manager.install(app)

mailbox: list[str] = []
failures_left = {"count": 0}


@task_manager.task(retries=2, delay=60)
def send_welcome_email(address: str) -> None:
    if failures_left["count"] > 0:
        failures_left["count"] -= 1
        raise ConnectionError("SMTP server unavailable")
    mailbox.append(address)


@app.post("/signup")
def signup(email: str, background_tasks: ManagedBackgroundTasks) -> dict[str, str]:
    return {"task_id": background_tasks.add_task(send_welcome_email, email)}


# -- test helpers -----------------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    mailbox.clear()
    observer.events.clear()
    failures_left["count"] = 0
    async with task_manager:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def wait_for(
    task_id: str, condition: Callable[[TaskRecord], bool], within: float = 5.0
) -> TaskRecord:
    """Poll the store until the task's record meets ``condition``; fail after ``within`` seconds."""
    record: Any = None
    with anyio.move_on_after(within):
        while True:
            record = await task_manager.store.aget(task_id)
            if record is not None and condition(record):
                return record
            await anyio.sleep(0.01)
    raise AssertionError(f"task {task_id} did not get there in {within}s; last seen: {record}")


def has_status(status: TaskStatus) -> Callable[[TaskRecord], bool]:
    return lambda record: record.status is status


# -- tests ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_signup_sends_the_email(client: httpx.AsyncClient) -> None:
    response = await client.post("/signup", params={"email": "ada@example.com"})
    task_id = response.json()["task_id"]

    record = await wait_for(task_id, has_status(TaskStatus.SUCCESS))

    assert record.attempt == 1
    assert mailbox == ["ada@example.com"]
    statuses = [e.status for e in observer.lifecycle_events if e.task_id == task_id]
    assert statuses == [TaskStatus.RUNNING, TaskStatus.SUCCESS]


@pytest.mark.anyio
async def test_a_failed_attempt_is_retried_after_its_delay(client: httpx.AsyncClient) -> None:
    failures_left["count"] = 1
    response = await client.post("/signup", params={"email": "bob@example.com"})
    task_id = response.json()["task_id"]

    # The first attempt failed; the retry waits for 60 seconds of *clock* time.
    record = await wait_for(task_id, lambda r: r.attempt == 1 and r.status is TaskStatus.PENDING)
    assert record.error == "ConnectionError: SMTP server unavailable"
    assert mailbox == []

    clock.advance(60)  # no real waiting
    record = await wait_for(task_id, has_status(TaskStatus.SUCCESS))
    assert record.attempt == 2
    assert mailbox == ["bob@example.com"]


@pytest.mark.anyio
async def test_the_task_without_http() -> None:
    mailbox.clear()
    async with task_manager:
        tasks = ManagedBackgroundTasks(task_manager)  # no request: nothing runs by itself
        task_id = tasks.add_task(send_welcome_email, "cy@example.com")
        assert (await task_manager.store.aget(task_id)).status is TaskStatus.PENDING

        await tasks.tasks[-1]()  # run it now, with retries, status and events

        record = await task_manager.store.aget(task_id)
        assert record.status is TaskStatus.SUCCESS
        assert mailbox == ["cy@example.com"]
