"""Cancelling tasks on the memory backend: PENDING ones never start, RUNNING async ones
stop at their next await, sync ones see cancel_requested; CANCELLED is final."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any

import pytest

from fastapi_taskflow import (
    ManagedBackgroundTasks,
    MemoryObserver,
    TaskManager,
    TaskNotFoundError,
    TaskStateError,
    TaskStatus,
    get_task_context,
)

pytestmark = pytest.mark.anyio


async def test_a_pending_task_is_cancelled_and_never_starts(eventually: Any) -> None:
    tm = TaskManager(poll_interval=0.02)
    ran: list[str] = []

    @tm.task()
    async def job(label: str) -> None:
        ran.append(label)

    async with tm:
        waiting = await tm.schedule_once(job, "later", delay=0.3)
        record = await tm.cancel(waiting)
        assert record.status is TaskStatus.CANCELLED and record.cancel_requested
        managed = ManagedBackgroundTasks(tm)
        background = managed.add_task(job, "background")
        assert (await tm.cancel(background)).status is TaskStatus.CANCELLED
        await managed()  # Starlette would run it now: it must not start
        control = tm.add_task(job, "control")
        await eventually(lambda: tm.store.get(control).status is TaskStatus.SUCCESS)  # type: ignore[union-attr]
        # A firing due after the cancelled one: once it ran, the cancelled one's time
        # has come and gone (firings are taken in the order they fall due).
        after = await tm.schedule_once(job, "after", delay=0.35)
        await eventually(lambda: tm.store.get(after).status is TaskStatus.SUCCESS)  # type: ignore[union-attr]
    assert ran == ["control", "after"]
    for task_id in (waiting, background):
        found = tm.store.get(task_id)
        assert found is not None and found.status is TaskStatus.CANCELLED
        assert found.started_at is None


async def test_a_running_async_task_stops_at_its_next_await(eventually: Any) -> None:
    tm = TaskManager(poll_interval=0.02)
    observer = MemoryObserver()
    tm.observers.add(observer)
    steps: list[int] = []
    cleaned: list[bool] = []

    @tm.task(retries=3)
    async def long_job() -> None:
        try:
            for n in range(10_000):
                steps.append(n)
                await asyncio.sleep(0.01)
        finally:
            cleaned.append(True)

    async with tm:
        task_id = tm.add_task(long_job)
        await eventually(lambda: len(steps) >= 3)
        record = await tm.cancel(task_id)
        assert record.cancel_requested
        await eventually(lambda: tm.store.get(task_id).status is TaskStatus.CANCELLED, timeout=2)  # type: ignore[union-attr]
        # it did not run on: its loop was left (its finally ran)
        await eventually(lambda: cleaned == [True], timeout=2)
    final = tm.store.get(task_id)
    assert final is not None and final.attempt == 1  # never retried
    assert final.error is not None and final.error.startswith("TaskCancelledError")
    assert cleaned == [True]
    statuses = [e.status for e in observer.lifecycle_events if e.task_id == task_id]
    assert statuses == [TaskStatus.RUNNING, TaskStatus.CANCELLED]
    assert any(e.extra.get("taskflow_cancel") for e in observer.log_events)


async def test_a_running_sync_task_sees_cancel_requested(eventually: Any) -> None:
    tm = TaskManager(poll_interval=0.02)
    started = threading.Event()
    checks: list[bool] = []

    @tm.task()
    def sync_job() -> str:
        ctx = get_task_context()
        assert ctx is not None
        started.set()
        # A deadline, not `while True`: a thread cannot be stopped from outside, and one
        # left looping after a failed assertion would hold up the process's exit.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            checks.append(ctx.cancel_requested)
            ctx.raise_if_cancelled()
            time.sleep(0.01)
        return "never saw the cancellation"

    async with tm:
        task_id = tm.add_task(sync_job)
        await eventually(started.is_set)
        await tm.cancel(task_id)
        await eventually(lambda: tm.store.get(task_id).status is TaskStatus.CANCELLED, timeout=2)  # type: ignore[union-attr]
    assert checks[0] is False and checks[-1] is True


async def test_cancel_sync_works_from_a_plain_thread(eventually: Any) -> None:
    tm = TaskManager(poll_interval=0.02)

    @tm.task()
    async def forever() -> None:
        await asyncio.sleep(3600)

    async with tm:
        task_id = tm.add_task(forever)
        await eventually(lambda: tm.store.get(task_id).status is TaskStatus.RUNNING)  # type: ignore[union-attr]
        record = await asyncio.to_thread(tm.cancel_sync, task_id)
        assert record.cancel_requested
        await eventually(lambda: tm.store.get(task_id).status is TaskStatus.CANCELLED, timeout=2)  # type: ignore[union-attr]


async def test_cancel_errors_and_idempotence(eventually: Any) -> None:
    tm = TaskManager(poll_interval=0.02)

    @tm.task()
    def done() -> None: ...

    async with tm:
        with pytest.raises(TaskNotFoundError, match="no task has the id 'nope'"):
            await tm.cancel("nope")
        finished = tm.add_task(done)
        await eventually(lambda: tm.store.get(finished).status is TaskStatus.SUCCESS)  # type: ignore[union-attr]
        with pytest.raises(TaskStateError, match="already ended SUCCESS"):
            await tm.cancel(finished)
        later = await tm.schedule_once(done, delay=60)
        first = await tm.cancel(later)
        again = await tm.cancel(later)
        assert first.status is again.status is TaskStatus.CANCELLED


async def test_a_cancelled_task_keeps_its_idempotency_key() -> None:
    tm = TaskManager(poll_interval=0.02)

    @tm.task(priority=1)
    def charge(order: int) -> None: ...

    async with tm:
        await tm.shutdown()  # no workers: the task stays PENDING
    first = tm.add_task(charge, 1, idempotency_key="order-1")
    assert tm.cancel_sync(first).status is TaskStatus.CANCELLED
    assert tm.add_task(charge, 1, idempotency_key="order-1") == first
    assert tm.add_task(charge, 1, idempotency_key="order-1-retry") != first


async def test_a_cancel_requested_task_of_a_dead_instance_ends_cancelled(
    tmp_path: Any, eventually: Any
) -> None:
    """Recovery adopts a RUNNING task whose instance died after cancel() reached it:
    CANCELLED, not INTERRUPTED, and not run again even with requeue_on_interrupt."""
    from datetime import datetime, timezone

    from fastapi_taskflow import TaskRecord
    from fastapi_taskflow.backends import open_backend
    from fastapi_taskflow.clock import SystemClock

    url = f"sqlite:///{tmp_path / 'tasks.db'}"
    ran: list[bool] = []
    tm = TaskManager(backend=url, liveness_seconds=0.2, poll_interval=0.02)

    @tm.task(name="adopted.job", requeue_on_interrupt=True)
    async def job() -> None:
        ran.append(True)

    dead = open_backend(url, clock=SystemClock())
    await dead.open()
    try:
        now = datetime.now(timezone.utc)
        record = TaskRecord(
            task_id="t-dead-1",
            func_name="adopted.job",
            status=TaskStatus.RUNNING,
            args=[],
            kwargs={},
            attempt=1,
            requeue_on_interrupt=True,
            cancel_requested=True,
            owner="dead-instance",
            created_at=now,
            updated_at=now,
            started_at=now,
        )
        assert (await dead.create(record)).created
    finally:
        await dead.close()
    async with tm:
        await eventually(
            lambda: tm.store.get("t-dead-1").status is TaskStatus.CANCELLED,  # type: ignore[union-attr]
            timeout=15,  # 5 s ran out once on a loaded CI machine
        )
    # No wait for a run that should not come: CANCELLED is terminal (no claim moves it
    # to RUNNING), so a wrongful run could only have come before it (a requeue, then a
    # run that ended CANCELLED), and leaving the manager waits for whatever runs.
    assert ran == []
    final = tm.store.get("t-dead-1")
    assert final is not None and "cancel requested" in (final.error or "")


def _sync_task_ignoring_cancel(tm: TaskManager, ending: str, **options: Any) -> Any:
    """A sync task that starts, then (once cancelled) stops as ``ending`` says: it
    ignores the request until its timeout (``"timeout"``), ``sys.exit()``s
    (``"exit"``), or keeps running through a shutdown (``"shutdown"``)."""
    started = threading.Event()
    runs: list[int] = []

    @tm.task(name=f"ignores_cancel_{ending}", **options)
    def ignores_cancel() -> str:
        ctx = get_task_context()
        assert ctx is not None
        runs.append(ctx.attempt)
        started.set()
        deadline = time.monotonic() + 5  # never past the test: a thread cannot be stopped
        while time.monotonic() < deadline:
            if ending == "exit" and ctx.cancel_requested:
                sys.exit(3)
            time.sleep(0.01)
        return "finished"

    ignores_cancel.started = started  # type: ignore[attr-defined]
    ignores_cancel.runs = runs  # type: ignore[attr-defined]
    return ignores_cancel


@pytest.mark.parametrize("ending", ["timeout", "exit"])
async def test_a_cancelled_sync_task_is_never_retried_however_it_stops(
    ending: str, eventually: Any
) -> None:
    """CANCELLED is final: a sync task that ignored the request until its timeout
    passed, or stopped with ``sys.exit()``, was retried (and could end SUCCESS)."""
    tm = TaskManager(poll_interval=0.02)
    job = _sync_task_ignoring_cancel(tm, ending, retries=2, timeout=0.5)
    async with tm:
        task_id = tm.add_task(job)
        await eventually(job.started.is_set)
        await tm.cancel(task_id)
        await eventually(lambda: tm.store.get(task_id).status.is_terminal, timeout=5)  # type: ignore[union-attr]
        record = tm.store.get(task_id)
    assert record is not None and record.status is TaskStatus.CANCELLED, record
    assert record.attempt == 1 and job.runs == [1]
    assert (record.error or "").startswith("TaskCancelledError")


async def test_a_cancelled_sync_task_cut_off_by_a_shutdown_ends_cancelled(
    eventually: Any,
) -> None:
    """Not INTERRUPTED (which a durable store's ``requeue_on_interrupt`` would run
    again on another instance): the task was cancelled before the shutdown."""
    tm = TaskManager(poll_interval=0.02, shutdown_timeout=0.2)
    job = _sync_task_ignoring_cancel(tm, "shutdown", requeue_on_interrupt=True)
    async with tm:
        task_id = tm.add_task(job)
        await eventually(job.started.is_set)
        await tm.cancel(task_id)
    record = await tm.store.aget(task_id)
    assert record is not None and record.status is TaskStatus.CANCELLED, record
    assert record.cancel_requested and "interrupted by shutdown" in (record.error or "")
    assert job.runs == [1]


async def test_a_running_task_s_logs_say_who_asked_to_cancel_it(eventually: Any) -> None:
    """timeouts-and-cancellation.md: "its logs hold a warning line ``cancellation
    requested (from instance ...)``" (observers got it; the stored logs did not)."""
    tm = TaskManager(poll_interval=0.02)

    @tm.task()
    async def forever() -> None:
        await asyncio.sleep(3600)

    async with tm:
        task_id = tm.add_task(forever)
        await eventually(lambda: tm.store.get(task_id).status is TaskStatus.RUNNING)  # type: ignore[union-attr]
        await tm.cancel(task_id)
        await eventually(lambda: tm.store.get(task_id).status is TaskStatus.CANCELLED)  # type: ignore[union-attr]
        record = await tm.store.aget(task_id)
    assert record is not None
    warnings = [e.message for e in record.logs if e.level == "warning"]
    assert warnings == [f"cancellation requested (from instance {tm.instance_id})"]
