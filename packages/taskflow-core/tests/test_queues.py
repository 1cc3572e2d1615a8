"""Priority queue order, per-queue concurrency, max_size and QueueFullError."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import anyio
import pytest

from fastapi_taskflow import (
    ManagedBackgroundTasks,
    QueueConfig,
    QueueFullError,
    TaskManager,
    TaskStatus,
    get_task_context,
)

pytestmark = pytest.mark.anyio


async def test_higher_priority_runs_first_and_equal_priorities_in_order(eventually: Any) -> None:
    tm = TaskManager(queues={"default": QueueConfig(concurrency=1)}, poll_interval=0.01)
    gate = asyncio.Event()
    order: list[str] = []

    @tm.task()
    async def blocker() -> None:
        await gate.wait()

    @tm.task()
    async def job(label: str) -> None:
        order.append(label)

    async with tm:
        managed = ManagedBackgroundTasks(tm)
        first = managed.add_task(blocker, priority=10)
        await eventually(lambda: tm.store.get(first).status is TaskStatus.RUNNING)  # type: ignore[union-attr]
        for label, priority in [("low", 1), ("high-a", 9), ("mid", 5), ("high-b", 9)]:
            managed.add_task(job, label, priority=priority)
        with anyio.fail_after(5):  # all four wait in the backend's queue
            while await tm.backend.queue_length("default") < 4:
                await asyncio.sleep(0.005)
        gate.set()
        await eventually(lambda: len(order) == 4)
    assert order == ["high-a", "high-b", "mid", "low"]


async def test_priority_tasks_need_no_startup_call_and_ignore_eager(eventually: Any) -> None:
    tm = TaskManager(poll_interval=0.01)
    ran = threading.Event()

    @tm.task()
    def job() -> None:
        ran.set()

    managed = ManagedBackgroundTasks(tm)
    task_id = managed.add_task(job, priority=3, eager=True)
    assert managed.tasks == []  # routed through the queue, not the background list
    await eventually(ran.is_set)
    record = await tm.store.aget(task_id)
    assert record is not None and record.priority == 3 and record.queue == "default"
    await eventually(lambda: tm.store.get(task_id).status is TaskStatus.SUCCESS)  # type: ignore[union-attr]
    await tm.shutdown()


async def test_concurrency_cap_holds_under_load(eventually: Any) -> None:
    tm = TaskManager(queues={"io": QueueConfig(concurrency=3)}, poll_interval=0.01)
    running = 0
    peak = 0

    @tm.task(queue="io")
    async def io_job() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    async with tm:
        ids = [tm.add_task(io_job) for _ in range(20)]
        await eventually(
            lambda: all(tm.store.get(i).status is TaskStatus.SUCCESS for i in ids),  # type: ignore[union-attr]
            timeout=10,
        )
    assert peak == 3


async def test_full_queue_rejects_and_records_rejected(eventually: Any) -> None:
    tm = TaskManager(queues={"mail": QueueConfig(concurrency=1, max_size=2)}, poll_interval=0.01)
    gate = asyncio.Event()

    @tm.task(queue="mail")
    async def send() -> None:
        await gate.wait()

    async with tm:
        accepted = [tm.add_task(send) for _ in range(2)]
        with pytest.raises(QueueFullError, match="raise QueueConfig\\(max_size=...\\)") as info:
            tm.add_task(send)
        rejected = await tm.store.aget(info.value.task_id)
        assert rejected is not None and rejected.status is TaskStatus.REJECTED
        gate.set()
        for task_id in accepted:
            await eventually(lambda t=task_id: tm.store.get(t).status is TaskStatus.SUCCESS)  # type: ignore[misc]
        # Room again once the waiting tasks started.
        again = tm.add_task(send)
        await eventually(lambda: tm.store.get(again).status is TaskStatus.SUCCESS)  # type: ignore[union-attr]


async def test_task_manager_add_task_before_start_runs_when_started(eventually: Any) -> None:
    tm = TaskManager(poll_interval=0.01)
    done = threading.Event()

    @tm.task()
    def boot_job(name: str) -> None:
        done.set()

    task_id = await asyncio.to_thread(tm.add_task, boot_job, "x")  # no loop in that thread
    assert tm.store.get(task_id) is not None
    async with tm:
        await eventually(done.is_set)
        await eventually(lambda: tm.store.get(task_id).status is TaskStatus.SUCCESS)  # type: ignore[union-attr]


async def test_a_queued_task_interrupted_by_a_shutdown_runs_again_on_the_next_instance(
    tmp_path: Any, eventually: Any
) -> None:
    """``requeue_on_interrupt``: the task goes back on its queue for another instance.
    The instance shutting down does not claim it again (it ran it twice more, then
    left a queue worker polling after ``shutdown()`` returned)."""
    url = f"sqlite:///{tmp_path}/tasks.db"
    starts: list[tuple[str, int]] = []
    blocking = [True]

    def instance(name: str) -> tuple[TaskManager, Any]:
        tm = TaskManager(url, poll_interval=0.02, shutdown_timeout=0.2, instance_id=name)

        @tm.task(name="reindex", requeue_on_interrupt=True, priority=1)
        async def reindex() -> str:
            ctx = get_task_context()
            assert ctx is not None
            starts.append((name, ctx.attempt))
            if blocking[0]:
                await anyio.sleep(3600)
            return "done"

        return tm, reindex

    first, reindex = instance("a")
    async with first:
        task_id = first.add_task(reindex)
        await eventually(lambda: starts == [("a", 1)], timeout=10)
    left = [t for t in asyncio.all_tasks() if t.get_name().startswith("taskflow-")]
    assert left == []
    assert starts == [("a", 1)]
    blocking[0] = False
    second, _ = instance("b")
    async with second:
        await eventually(
            lambda: second.store.get(task_id).status is TaskStatus.SUCCESS,  # type: ignore[union-attr]
            timeout=10,
        )
    assert starts == [("a", 1), ("b", 2)]
