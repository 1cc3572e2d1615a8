"""Retention (issue 9 #7): finished tasks older than ``retention`` are deleted in the
background through ``Store.purge``; ``task_manager.purge()`` does it now; the memory
backend keeps at most ``max_records`` records, dropping the oldest finished first."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import pytest

from fastapi_taskflow import BackendURLError, InvalidTaskError, TaskManager, TaskStatus
from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.models import TaskQuery, TaskRecord
from fastapi_taskflow.retention import DEFAULT_RETENTION
from taskflow_memory import DEFAULT_MAX_RECORDS, MemoryBackend, from_url

pytestmark = pytest.mark.anyio


def test_retention_defaults_to_seven_days_and_none_keeps_all() -> None:
    assert TaskManager().retention == DEFAULT_RETENTION == timedelta(days=7)
    assert TaskManager(retention=None).retention is None


@pytest.mark.parametrize("bad", [0, 7, timedelta(0), timedelta(seconds=-1), "7d"])
def test_a_bad_retention_is_refused(bad: object) -> None:
    with pytest.raises(InvalidTaskError, match="retention must be a positive"):
        TaskManager(retention=bad)  # type: ignore[arg-type]


async def test_finished_tasks_past_retention_are_deleted_in_the_background(
    eventually: Callable[..., object],
) -> None:
    clock = ManualClock()
    tm = TaskManager(clock=clock, retention=timedelta(seconds=1))
    release = asyncio.Event()

    async def quick(n: int) -> int:
        return n

    async def slow() -> None:
        await release.wait()

    async with tm:
        done_ids = [tm.add_task(quick, n) for n in range(5)]
        active = tm.add_task(slow)
        state = tm.backend._state  # type: ignore[attr-defined]
        await eventually(
            lambda: sum(c[TaskStatus.SUCCESS] for c in state.func_counts.values()) == 5
        )
        clock.advance(2)
        await eventually(lambda: all(tm.store.get(t) is None for t in done_ids), timeout=10)
        record = await tm.store.aget(active)
        assert record is not None and record.status is TaskStatus.RUNNING
        release.set()


async def test_purge_now_and_retention_none() -> None:
    clock = ManualClock()
    tm = TaskManager(clock=clock, retention=None)

    async def quick() -> None:
        pass

    async with tm:
        ids = [tm.add_task(quick) for _ in range(3)]
        for task_id in ids:
            while (record := await tm.store.aget(task_id)) is None or not record.status.is_terminal:
                await asyncio.sleep(0.005)
        clock.advance(3600)
        with pytest.raises(InvalidTaskError, match="needs older_than"):
            await tm.purge()
        assert await tm.purge(older_than=timedelta(hours=2)) == 0
        assert await tm.purge(older_than=timedelta(minutes=59)) == 3
        assert [await tm.store.aget(t) for t in ids] == [None, None, None]


def _record(clock: ManualClock, n: int, status: TaskStatus) -> TaskRecord:
    now = clock.now()
    return TaskRecord(
        task_id=f"t{n:04d}",
        func_name="job",
        status=status,
        created_at=now,
        updated_at=now,
        finished_at=now if status.is_terminal else None,
        idempotency_key=f"k{n}",
    )


async def test_memory_backend_keeps_at_most_max_records_oldest_finished_first() -> None:
    clock = ManualClock()
    backend = MemoryBackend(clock=clock, max_records=10)
    active = [_record(clock, n, TaskStatus.PENDING) for n in range(4)]
    await backend.create_many(active)
    for n in range(4, 20):
        await backend.create(_record(clock, n, TaskStatus.PENDING))
        await backend.transition(f"t{n:04d}", expected=[TaskStatus.PENDING], new=TaskStatus.SUCCESS)
        clock.advance(1)
    stats = await backend.stats()
    assert stats.total == 10
    assert stats.by_status == {TaskStatus.PENDING: 4, TaskStatus.SUCCESS: 6}
    kept = {r.task_id for r in (await backend.query(TaskQuery(limit=100))).items}
    assert kept == {f"t{n:04d}" for n in [0, 1, 2, 3, *range(14, 20)]}
    assert await backend.find_by_key("k4") is None  # dropped with its record
    assert await backend.find_by_key("k19") is not None


async def test_memory_backend_never_drops_active_tasks() -> None:
    clock = ManualClock()
    backend = MemoryBackend(clock=clock, max_records=3)
    await backend.create_many([_record(clock, n, TaskStatus.PENDING) for n in range(5)])
    assert (await backend.stats()).total == 5


def test_memory_url_sets_the_cap() -> None:
    clock = ManualClock()
    assert from_url("memory://", clock=clock)._state.max_records == DEFAULT_MAX_RECORDS
    assert from_url("memory://?max_records=5", clock=clock)._state.max_records == 5
    assert from_url("memory://?max_records=none", clock=clock)._state.max_records is None
    for bad in ("memory://?max_records=0", "memory://?max_records=x", "memory://?other=1"):
        with pytest.raises(BackendURLError):
            from_url(bad, clock=clock)


async def test_memory_cap_skips_a_task_that_became_active_again() -> None:
    clock = ManualClock()
    backend = MemoryBackend(clock=clock, max_records=2)
    await backend.create(_record(clock, 0, TaskStatus.FAILED))
    await backend.transition("t0000", expected=[TaskStatus.FAILED], new=TaskStatus.PENDING)
    await backend.create(_record(clock, 1, TaskStatus.SUCCESS))
    await backend.create(_record(clock, 2, TaskStatus.SUCCESS))
    kept = {r.task_id for r in (await backend.query(TaskQuery(limit=10))).items}
    assert kept == {"t0000", "t0002"}


async def test_memory_cap_counts_a_task_that_finished_again_from_its_last_finish() -> None:
    clock = ManualClock()
    backend = MemoryBackend(clock=clock, max_records=2)
    await backend.create(_record(clock, 0, TaskStatus.FAILED))
    await backend.create(_record(clock, 1, TaskStatus.SUCCESS))
    await backend.transition("t0000", expected=[TaskStatus.FAILED], new=TaskStatus.PENDING)
    await backend.transition("t0000", expected=[TaskStatus.PENDING], new=TaskStatus.SUCCESS)
    await backend.create(_record(clock, 2, TaskStatus.SUCCESS))  # t0001 finished longest ago
    kept = {r.task_id for r in (await backend.query(TaskQuery(limit=10))).items}
    assert kept == {"t0000", "t0002"}
