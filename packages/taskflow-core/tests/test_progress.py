"""Progress reports: stored on the record, sent as events, coalesced when frequent."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fastapi_taskflow import (
    MemoryObserver,
    TaskManager,
    TaskStatus,
    task_progress,
)
from fastapi_taskflow.progress import PROGRESS_FIELD

pytestmark = pytest.mark.anyio


async def test_frequent_reports_are_coalesced_and_the_last_one_stored(eventually: Any) -> None:
    tm = TaskManager(poll_interval=0.02)
    observer = MemoryObserver()
    tm.observers.add(observer)
    reported: list[float] = []

    @tm.task()
    async def import_rows(total: int) -> int:
        for n in range(1, total + 1):
            task_progress(n / total)
            if n % 100 == 0:
                await asyncio.sleep(0.01)
                record = await tm.store.aget(tm_task_id[0])
                assert record is not None
                if record.progress is not None:
                    reported.append(record.progress)
        return total

    tm_task_id: list[str] = []
    async with tm:
        tm_task_id.append(tm.add_task(import_rows, 10_000))
        task_id = tm_task_id[0]
        await eventually(lambda: tm.store.get(task_id).status is TaskStatus.SUCCESS, timeout=10)  # type: ignore[union-attr]
    record = tm.store.get(task_id)
    assert record is not None and record.progress == 1.0
    events = [e for e in observer.log_events if PROGRESS_FIELD in e.extra]
    assert 1 <= len(events) < 100  # 10,000 reports, a handful of writes
    assert events[-1].extra[PROGRESS_FIELD] == 1.0
    assert reported == sorted(reported)  # the record moved forward while running


async def test_the_last_message_is_kept_in_the_logs(eventually: Any) -> None:
    tm = TaskManager(poll_interval=0.02)

    @tm.task()
    def sync_steps() -> None:
        task_progress(0.0, "downloading")
        task_progress(0.5, "downloading")
        task_progress(1.0, "done")

    async with tm:
        task_id = tm.add_task(sync_steps)
        await eventually(lambda: tm.store.get(task_id).status is TaskStatus.SUCCESS)  # type: ignore[union-attr]
    record = tm.store.get(task_id)
    assert record is not None and record.progress == 1.0
    messages = [e.message for e in record.logs if PROGRESS_FIELD in e.extra]
    # the reports came faster than the write interval: coalesced into the latest
    assert messages[-1] == "done" and len(messages) == len(set(messages))


async def test_a_bad_fraction_fails_the_task_with_a_clear_error(eventually: Any) -> None:
    tm = TaskManager(poll_interval=0.02)

    @tm.task()
    async def wrong() -> None:
        task_progress(40)

    async with tm:
        task_id = tm.add_task(wrong)
        await eventually(lambda: tm.store.get(task_id).status is TaskStatus.FAILED)  # type: ignore[union-attr]
    record = tm.store.get(task_id)
    assert record is not None and record.error is not None
    assert "between 0.0 and 1.0" in record.error and "40 / 200" in record.error


def test_outside_a_task_it_does_nothing() -> None:
    task_progress(0.5, "not in a task")
