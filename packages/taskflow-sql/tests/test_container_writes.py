"""A request's background tasks on a shared store: one write per task boundary.

Starlette runs a request's background tasks one after another. On a shared store each
task needs a durable start (PENDING -> RUNNING) and a durable outcome; written in turn
that is two writes per task. ``ManagedBackgroundTasks`` writes a task's successful
outcome while the next task starts, so the two share one group-committed write, and it
returns only once every outcome is written.
"""

from __future__ import annotations

from typing import Any

import pytest

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager, TaskStatus

pytestmark = pytest.mark.anyio

TASKS = 40


def _manager(place: Any) -> TaskManager:
    return TaskManager(backend=place.manager_url(), publish_events=False)


async def test_outcome_and_next_start_share_a_write(place: Any) -> None:
    tm = _manager(place)
    ran: list[int] = []

    @tm.task()
    async def step(i: int) -> int:
        ran.append(i)
        return i * 2

    async with tm:
        container = ManagedBackgroundTasks(tm)
        ids = [container.add_task(step, i) for i in range(TASKS)]
        await container()
        # Returned only once every outcome is written: all SUCCESS, read from the store.
        records = [await tm.store.aget(task_id) for task_id in ids]
        assert [r.status if r else None for r in records] == [TaskStatus.SUCCESS] * TASKS
        assert [r.result for r in records if r] == [i * 2 for i in range(TASKS)]
        assert ran == list(range(TASKS))  # one after another, in order, once each
        batcher = tm._engine._group_commit
        assert batcher is not None
        # One write per boundary: the first start, TASKS - 1 outcome+start pairs, the
        # last outcome. Written in turn it would be 2 * TASKS.
        assert batcher.batches_written <= TASKS + 2, batcher.batches_written


async def test_a_failing_task_between_others(place: Any) -> None:
    """A failed attempt's outcome is written before the next task starts, as before;
    the successful ones around it still end SUCCESS."""
    tm = _manager(place)

    @tm.task()
    async def maybe(i: int) -> None:
        if i == 1:
            raise RuntimeError("no")

    async with tm:
        container = ManagedBackgroundTasks(tm)
        ids = [container.add_task(maybe, i) for i in range(3)]
        await container()
        statuses = [(await tm.store.aget(task_id)).status for task_id in ids]  # type: ignore[union-attr]
        assert statuses == [TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.SUCCESS]
