"""Per-task timeouts: an async attempt is cancelled at its deadline, a sync one is
reported timed out and its late result discarded; both are failed attempts, retried
while retries remain."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from fastapi_taskflow import InvalidTaskError, TaskManager, TaskStatus, TaskTimeoutError

pytestmark = pytest.mark.anyio


async def test_a_hanging_async_task_fails_at_its_deadline(eventually: Any) -> None:
    tm = TaskManager(poll_interval=0.02)
    reached_end: list[bool] = []

    @tm.task(timeout=0.2)
    async def hangs() -> None:
        await asyncio.sleep(3600)
        reached_end.append(True)

    async with tm:
        task_id = tm.add_task(hangs)
        await eventually(lambda: tm.store.get(task_id).status is TaskStatus.FAILED, timeout=2)  # type: ignore[union-attr]
    record = tm.store.get(task_id)
    assert record is not None and reached_end == []
    assert record.error is not None and record.error.startswith("TaskTimeoutError: ")
    assert "timeout of 0.2s" in record.error and "cancelled" in record.error
    assert record.attempt == 1


async def test_a_timed_out_attempt_is_retried(eventually: Any) -> None:
    tm = TaskManager(poll_interval=0.02)
    attempts: list[int] = []

    @tm.task(timeout=0.2, retries=1)
    async def slow_then_fast() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            await asyncio.sleep(3600)
        return "done"

    async with tm:
        task_id = tm.add_task(slow_then_fast)
        await eventually(lambda: tm.store.get(task_id).status is TaskStatus.SUCCESS, timeout=3)  # type: ignore[union-attr]
    record = tm.store.get(task_id)
    assert record is not None and record.attempt == 2 and record.result == "done"
    assert any("TaskTimeoutError" in e.message for e in record.logs if e.level == "error")


async def test_a_sync_task_is_reported_timed_out_and_its_late_result_discarded(
    eventually: Any,
) -> None:
    tm = TaskManager(poll_interval=0.02)
    release = threading.Event()
    finished = threading.Event()

    @tm.task(timeout=0.2)
    def blocking() -> str:
        release.wait(10)
        finished.set()
        return "late"

    async with tm:
        task_id = tm.add_task(blocking)
        await eventually(lambda: tm.store.get(task_id).status is TaskStatus.FAILED, timeout=2)  # type: ignore[union-attr]
        release.set()
        await eventually(finished.is_set)
        await asyncio.sleep(0.05)
    record = tm.store.get(task_id)
    assert record is not None and record.status is TaskStatus.FAILED
    assert record.result is None
    assert record.error is not None and "late result is discarded" in record.error


async def test_a_task_within_its_timeout_succeeds(eventually: Any) -> None:
    tm = TaskManager(poll_interval=0.02)

    @tm.task(timeout=5)
    def quick() -> int:
        time.sleep(0.01)
        return 1

    async with tm:
        task_id = tm.add_task(quick)
        await eventually(lambda: tm.store.get(task_id).status is TaskStatus.SUCCESS)  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", [0, -1, "1", True])
def test_a_bad_timeout_is_refused(bad: Any) -> None:
    with pytest.raises(InvalidTaskError, match="timeout must be"):
        TaskManager().task(timeout=bad)


def test_the_timeout_error_says_what_to_do() -> None:
    message = str(TaskTimeoutError(1.5))
    assert "1.5s" in message and "raise timeout=" in message


async def test_a_sync_attempt_s_timeout_counts_from_when_its_thread_starts(
    eventually: Any,
) -> None:
    """With every pool thread busy (a timed-out attempt keeps its thread, as
    documented), a sync task waits for a thread; that wait is not its attempt's
    time. It failed with TaskTimeoutError without its function ever being called."""
    tm = TaskManager(sync_workers=1, poll_interval=0.02)
    release = threading.Event()
    called: list[str] = []

    @tm.task(timeout=0.1)
    def holds_the_thread() -> None:
        release.wait(10)

    @tm.task(timeout=0.5)
    def quick() -> str:
        called.append("quick")
        return "done"

    async with tm:
        holder = tm.add_task(holds_the_thread)
        await eventually(lambda: tm.store.get(holder).status is TaskStatus.FAILED)  # type: ignore[union-attr]
        task_id = tm.add_task(quick)  # waits: the only thread is still held
        await asyncio.sleep(0.8)  # longer than quick's timeout, spent waiting for a thread
        assert tm.store.get(task_id).status is not TaskStatus.FAILED  # type: ignore[union-attr]
        release.set()
        await eventually(lambda: tm.store.get(task_id).status.is_terminal)  # type: ignore[union-attr]
        record = tm.store.get(task_id)
    assert record is not None and record.status is TaskStatus.SUCCESS, record
    assert called == ["quick"] and record.result == "done"
