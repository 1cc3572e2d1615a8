"""A bounded queue frees its places when another instance runs its tasks, without fan-out.

``QueueConfig.max_size`` counts the tasks accepted on this instance that wait on the
queue. With ``publish_events=False`` no event says that another instance claimed one:
the instance learns it from the task's record (the cancellation watcher's poll). Two
managers share one real store; A is busy, B runs the two tasks A accepted into its
queue of two places, and A accepts again. Real servers, nothing mocked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from durable_stores import DURABLE, isolated_url

from fastapi_taskflow import QueueConfig, QueueFullError, TaskManager, TaskStatus

pytestmark = pytest.mark.anyio

DEADLINE = 20.0


@pytest.fixture(params=sorted(DURABLE))
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from isolated_url(request.param, tmp_path)


def manager(url: str, instance_id: str, gate: asyncio.Event) -> tuple[TaskManager, Any, Any]:
    """A manager, its blocking task function and its quick one."""
    tm = TaskManager(
        backend=url,
        instance_id=instance_id,
        poll_interval=0.1,
        publish_events=False,
        queues={"reports": QueueConfig(concurrency=1, max_size=2)},
    )

    @tm.task(name="bounded.block", queue="reports")
    async def block() -> None:
        await gate.wait()

    @tm.task(name="bounded.report", queue="reports")
    async def report() -> None:
        pass

    return tm, block, report


async def status_of(tm: TaskManager, task_id: str) -> TaskStatus | None:
    record = await tm.store.aget(task_id)
    return None if record is None else record.status


async def until(tm: TaskManager, task_ids: list[str], status: TaskStatus) -> None:
    deadline = time.monotonic() + DEADLINE
    while True:
        now = [await status_of(tm, t) for t in task_ids]
        if all(s is status for s in now):
            return
        assert time.monotonic() < deadline, f"still not {status.value}: {now}"
        await asyncio.sleep(0.05)


async def test_tasks_run_by_another_instance_free_their_places(durable_url: str) -> None:
    gate = asyncio.Event()
    a, block, report = manager(durable_url, "A", gate)
    b, _, _ = manager(durable_url, "B", gate)
    try:
        async with a:
            blocker = a.add_task(block)
            await until(a, [blocker], TaskStatus.RUNNING)  # A's one slot is taken
            waiting = [a.add_task(report) for _ in range(2)]
            with pytest.raises(QueueFullError):
                a.add_task(report)
            async with b:
                await until(a, waiting, TaskStatus.SUCCESS)  # run by B
                records = [await a.store.aget(t) for t in waiting]
                assert all(r is not None and r.owner != "A" for r in records)
                # A's queue has room again: its two tasks no longer wait.
                deadline = time.monotonic() + DEADLINE
                while True:
                    try:
                        again = a.add_task(report)
                        break
                    except QueueFullError:
                        assert time.monotonic() < deadline, "A's queue stayed full"
                        await asyncio.sleep(0.1)
                await until(a, [again], TaskStatus.SUCCESS)
                gate.set()
                await until(a, [blocker], TaskStatus.SUCCESS)
    finally:
        gate.set()


async def test_a_queued_task_whose_record_is_not_written_yet_stays_here(tmp_path: Path) -> None:
    """The watcher reads the record of a task still in the write buffer: no record yet
    is not "gone". The task (its function a local one, which only this instance can
    run) runs here once its write lands."""
    gate = asyncio.Event()
    tm = TaskManager(
        backend=f"sqlite:///{tmp_path / 'tasks.db'}",
        poll_interval=0.1,
        publish_events=False,
        queues={"default": QueueConfig(concurrency=1)},
    )
    ran: list[str] = []

    @tm.task(name="buffered.block")
    async def block() -> None:
        await gate.wait()

    async def local_job() -> None:  # not registered: runs only where it was accepted
        ran.append("local")

    try:
        async with tm:
            blocker = tm.add_task(block)
            await until(tm, [blocker], TaskStatus.RUNNING)
            backend: Any = tm._engine.backend
            slow = {"on": True}
            for name in ("create_many", "write_many"):
                real = getattr(backend, name)

                async def delayed(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
                    if slow["on"]:
                        await asyncio.sleep(1.5)  # three of the watcher's rounds
                    return await _real(*args, **kwargs)

                setattr(backend, name, delayed)
            task_id = tm.add_task(local_job)
            deadline = time.monotonic() + DEADLINE
            while await backend.get(task_id) is None:  # written, after the rounds
                assert time.monotonic() < deadline, "the task's record was never written"
                await asyncio.sleep(0.05)
            slow["on"] = False
            gate.set()
            await until(tm, [blocker, task_id], TaskStatus.SUCCESS)
    finally:
        gate.set()
    assert ran == ["local"]
