"""The admin's figures and the retention purge on SQL stores cost the same however much
history is kept.

``durations()`` walks each function's newest finished tasks (``DURATION_WINDOW`` of
them), ``throughput()`` the finish-time range asked for, and a purge batch the oldest
finished tasks up to its size: none reads every finished task, which made ``GET
/api/stats`` take seconds once a table held a few hundred thousand of them, and made
each purge batch on SQLite hold the writer while it read them all.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.models import DURATION_WINDOW, TaskRecord, TaskStatus
from taskflow_sql import SQLBackend, bulk_insert_tasks

pytestmark = pytest.mark.anyio

_START = datetime(2030, 1, 1, tzinfo=timezone.utc)


def _finished(
    prefix: str, count: int, *, func_name: str, took: float, first: datetime
) -> Iterator[TaskRecord]:
    """``count`` SUCCESS tasks of ``func_name``, created one second apart from ``first``,
    each running ``took`` seconds."""
    for i in range(count):
        created = first + timedelta(seconds=i)
        yield TaskRecord(
            task_id=f"{prefix}{i:06d}",
            func_name=func_name,
            status=TaskStatus.SUCCESS,
            attempt=1,
            created_at=created,
            updated_at=created,
            started_at=created,
            finished_at=created + timedelta(seconds=took),
        )


async def test_durations_rank_each_functions_newest_finished_tasks(place: Any) -> None:
    """Each function's figures come from its ``DURATION_WINDOW`` newest finished tasks
    (older, slower runs are left out), and a function whose finished tasks are all old
    still has figures."""
    backend = SQLBackend(
        place.url, table_prefix=place.prefix, schema=place.schema, clock=ManualClock()
    )
    await backend.open()
    try:
        recent = _START + timedelta(days=10)
        # older, slow runs of jobs.a, then DURATION_WINDOW newer, fast ones
        await bulk_insert_tasks(
            backend, _finished("old", 50, func_name="jobs.a", took=100, first=_START)
        )
        await bulk_insert_tasks(
            backend, _finished("new", DURATION_WINDOW, func_name="jobs.a", took=1, first=recent)
        )
        # a function whose only finished tasks are old still has its figures
        await bulk_insert_tasks(
            backend, _finished("b", 3, func_name="jobs.b", took=2, first=_START)
        )
        got = await backend.durations()
        assert set(got) == {"jobs.a", "jobs.b"}
        assert got["jobs.a"].count == DURATION_WINDOW
        assert got["jobs.a"].p99 == pytest.approx(1.0)  # the slow old runs are out
        assert got["jobs.b"].count == 3 and got["jobs.b"].p50 == pytest.approx(2.0)
        assert set(await backend.durations(func_names=["jobs.b"])) == {"jobs.b"}
    finally:
        await backend.close()


class Steps:
    """SQLite's virtual-machine steps (in hundreds) on every connection opened while it
    counts: the store's reads (aiosqlite) and its writer's own connection alike."""

    def __init__(self) -> None:
        self.count = 0

    def step(self) -> int:
        self.count += 1
        return 0  # go on

    def on_connect(self, dbapi_connection: Any, _: Any) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):  # the writer's
            dbapi_connection.set_progress_handler(self.step, 100)
        else:  # aiosqlite's, adapted by SQLAlchemy
            dbapi_connection.run_async(lambda driver: driver.set_progress_handler(self.step, 100))


@pytest.fixture
async def counted(tmp_path: Path) -> AsyncIterator[tuple[SQLBackend, Steps]]:
    """A SQLite store whose every connection counts its steps."""
    steps = Steps()
    event.listen(Engine, "connect", steps.on_connect)
    try:
        backend = SQLBackend(f"sqlite:///{tmp_path / 'history.db'}", clock=ManualClock())
        await backend.open()
        try:
            yield backend, steps
        finally:
            await backend.close()
    finally:
        event.remove(Engine, "connect", steps.on_connect)


async def test_stats_work_does_not_grow_with_history(counted: tuple[SQLBackend, Steps]) -> None:
    """Ten times more old finished tasks leave the work of ``durations()`` and
    ``throughput()`` where it was (counted in SQLite's own steps, not in seconds)."""
    backend, steps = counted
    recent = _START + timedelta(days=30)
    since, until = recent, recent + timedelta(hours=1)

    async def work() -> int:
        steps.count = 0
        durations = await backend.durations()
        buckets = await backend.throughput(since=since, until=until, bucket_seconds=60)
        assert durations["jobs.a"].count == DURATION_WINDOW
        assert sum(bucket.succeeded for bucket in buckets) == 1500
        return steps.count

    await bulk_insert_tasks(
        backend, _finished("new", 1500, func_name="jobs.a", took=1, first=recent)
    )
    await bulk_insert_tasks(
        backend, _finished("old", 1500, func_name="jobs.a", took=1, first=_START)
    )
    small = await work()
    await bulk_insert_tasks(
        backend,
        _finished("older", 15_000, func_name="jobs.a", took=1, first=_START - timedelta(days=1)),
    )
    large = await work()
    assert small > 0
    assert large <= small * 1.2, (small, large)


async def test_a_purge_batch_reads_what_it_deletes(counted: tuple[SQLBackend, Steps]) -> None:
    """A batch of the retention purge walks the oldest finished tasks and stops at its
    size: ten times more finished tasks that are not due leave its work where it was
    (on SQLite it runs on the writer, so a batch that read every finished task held
    every task write back meanwhile)."""
    backend, steps = counted
    cutoff = _START + timedelta(days=1)

    async def purge_ten(prefix: str) -> int:
        await bulk_insert_tasks(
            backend, _finished(prefix, 10, func_name="jobs.a", took=1, first=_START)
        )
        steps.count = 0
        assert await backend.purge(finished_before=cutoff, batch_size=10) == 10
        return steps.count

    recent = _START + timedelta(days=30)
    await bulk_insert_tasks(
        backend, _finished("kept", 1500, func_name="jobs.a", took=1, first=recent)
    )
    small = await purge_ten("due")
    await bulk_insert_tasks(
        backend,
        _finished("more", 15_000, func_name="jobs.a", took=1, first=recent + timedelta(days=1)),
    )
    large = await purge_ten("due_again")
    assert small > 0
    assert large <= small * 1.2, (small, large)


async def test_throughput_groups_by_bucket_in_the_store(
    counted: tuple[SQLBackend, Steps],
) -> None:
    """Tasks that finished in 1,500 different seconds of one bucket cost the store what
    tasks that finished in the same second do: the store hands back one row per bucket
    (a bucket index computed by true division made a group of every distinct second,
    each sent to Python: seven times slower at 300,000 tasks)."""
    backend, steps = counted
    hour = _START + timedelta(days=30)

    async def work(since: datetime) -> int:
        steps.count = 0
        buckets = await backend.throughput(
            since=since, until=since + timedelta(hours=1), bucket_seconds=3600
        )
        assert [(b.bucket_start, b.succeeded) for b in buckets] == [(since, 1500)]
        return steps.count

    same_second = [
        record.model_copy(update={"finished_at": hour + timedelta(seconds=1)})
        for record in _finished("same", 1500, func_name="jobs.a", took=0, first=hour)
    ]
    await bulk_insert_tasks(backend, same_second)
    later = hour + timedelta(hours=2)
    await bulk_insert_tasks(
        backend, _finished("spread", 1500, func_name="jobs.a", took=1, first=later)
    )
    one_second, many_seconds = await work(hour), await work(later)
    assert one_second > 0
    assert many_seconds <= one_second * 1.2, (one_second, many_seconds)
