"""Tasks moving between instances on a shared store: clean hand-back at shutdown, and
a task whose function only some instances have.

Two task managers on one SQLite file stand for two instances (the SIGKILL tests in
test_durability_crash.py use separate processes; here nothing dies).
"""

from __future__ import annotations

import enum
import logging
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager, TaskStatus
from fastapi_taskflow.models import TaskRecord

pytest.importorskip("taskflow_sql")
pytestmark = pytest.mark.anyio


class Plan(enum.Enum):
    FREE = "free"
    PRO = "pro"


class Order(BaseModel):
    id: int
    total: float


def _instances(tmp_path: Path, ran_on: list[str]) -> tuple[TaskManager, TaskManager]:
    """Two instances, ``leaving`` and ``staying``, on one SQLite file, each with the task
    ``jobs.record`` noting in ``ran_on`` which instance ran it. A long liveness period:
    only the hand-back can explain a quick pick-up."""
    url = f"sqlite:///{tmp_path}/tasks.db"

    def make(name: str) -> TaskManager:
        tm = TaskManager(backend=url, liveness_seconds=60, poll_interval=0.05, instance_id=name)

        @tm.task(name="jobs.record")
        def record(n: int) -> None:
            ran_on.append(name)

        return tm

    return make("leaving"), make("staying")


async def _leave_with_unstarted_tasks(leaving: TaskManager, count: int) -> list[str]:
    """Accept ``count`` background tasks on ``leaving``, write them (owned, never
    started: no response was sent) and shut it down; their ids."""
    managed = ManagedBackgroundTasks(leaving)
    job = leaving.registry.by_name("jobs.record").func  # type: ignore[union-attr]
    ids = [managed.add_task(job, n) for n in range(count)]
    await leaving._engine.flush()
    await leaving.shutdown()
    return ids


async def _wait_all_succeed(staying: TaskManager, ids: list[str], wait_for: Any) -> None:
    async def all_done() -> bool:
        records = [await staying.store.aget(i) for i in ids]
        return all(r is not None and r.status is TaskStatus.SUCCESS for r in records)

    await wait_for(all_done, timeout=10)


async def test_clean_shutdown_hands_unstarted_tasks_to_another_instance_at_once(
    tmp_path: Path, wait_for: Any
) -> None:
    ran_on: list[str] = []
    leaving, staying = _instances(tmp_path, ran_on)
    async with staying:
        await leaving.startup()
        ids = await _leave_with_unstarted_tasks(leaving, 5)
        await _wait_all_succeed(staying, ids, wait_for)
    assert ran_on == ["staying"] * 5


async def test_shutdown_hands_back_unstarted_tasks_behind_many_running_ones(
    tmp_path: Path, wait_for: Any
) -> None:
    """The leaving instance still owns 130 older RUNNING tasks (their INTERRUPTED could
    not be written) when it shuts down: its unstarted tasks, listed after them, are
    still handed back at once."""
    ran_on: list[str] = []
    leaving, staying = _instances(tmp_path, ran_on)
    async with staying:
        await leaving.startup()
        backend = leaving._engine.backend
        long_ago = datetime(2026, 1, 1, tzinfo=timezone.utc)
        for n in range(130):
            stuck = TaskRecord(
                task_id=f"stuck-{n:03d}",
                func_name="jobs.record",
                status=TaskStatus.RUNNING,
                args=[n],
                kwargs={},
                created_at=long_ago,
                updated_at=long_ago,
                started_at=long_ago,
                attempt=1,
                owner="leaving",
            )
            assert (await backend.create(stuck)).created
        ids = await _leave_with_unstarted_tasks(leaving, 3)
        await _wait_all_succeed(staying, ids, wait_for)
    assert ran_on == ["staying"] * 3


async def test_a_task_waits_for_an_instance_that_has_its_function(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, wait_for: Any
) -> None:
    url = f"sqlite:///{tmp_path}/tasks.db"
    seen: list[tuple[Any, ...]] = []

    lacking = TaskManager(backend=url, poll_interval=0.05, instance_id="lacking")
    having = TaskManager(backend=url, poll_interval=0.05, instance_id="having")

    @having.task(name="billing.charge")
    def charge(order: Order, when: datetime, ref: uuid.UUID, plan: Plan) -> None:
        seen.append((order, when, ref, plan))

    order, when, ref = (
        Order(id=7, total=12.5),
        datetime(2030, 5, 1, tzinfo=timezone.utc),
        uuid.uuid4(),
    )
    caplog.set_level(logging.WARNING, logger="fastapi_taskflow")
    async with lacking:
        # Another instance accepted it: its record and queue entry are all there is.
        backend = lacking.backend
        now = datetime.now(timezone.utc)
        task_id = str(uuid.uuid4())
        await backend.create(
            TaskRecord(
                task_id=task_id,
                func_name="billing.charge",
                args=[order.model_dump(mode="json"), when.isoformat(), str(ref), "pro"],
                kwargs={},
                created_at=now,
                updated_at=now,
            )
        )
        await backend.enqueue(task_id, queue="default")

        async def warned() -> bool:
            return "'billing.charge', which is not registered" in caplog.text

        await wait_for(warned, timeout=10)
        record = await lacking.store.aget(task_id)
        assert record is not None and record.status is TaskStatus.PENDING

        async with having:

            async def done() -> bool:
                found = await having.store.aget(task_id)
                return found is not None and found.status is TaskStatus.SUCCESS

            await wait_for(done, timeout=30)
    assert seen == [(order, when, ref, Plan.PRO)]
    assert caplog.text.count("which is not registered") == 1
