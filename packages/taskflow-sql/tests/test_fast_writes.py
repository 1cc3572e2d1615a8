"""The drivers' fast write paths: SQLite's kept writer connection, PostgreSQL's array-bound
statements on a kept asyncpg connection, and how raw driver errors are classified."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import func, select

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.errors import BackendUnavailableError
from fastapi_taskflow.models import TaskRecord, TaskStatus, TaskUpdate, Transition
from taskflow_sql import SQLBackend, SQLBackendError
from taskflow_sql.context import Tx
from taskflow_sql.errors import is_retryable, is_unavailable, wrap_error
from taskflow_sql.types import UTCDateTime, sqlite_stamp

pytestmark = pytest.mark.anyio

P, R, S = TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.SUCCESS


def _record(clock: ManualClock, task_id: str, **fields: Any) -> TaskRecord:
    now = clock.now()
    fields.setdefault("func_name", "jobs.f")
    return TaskRecord(task_id=task_id, created_at=now, updated_at=now, **fields)


async def test_sqlite_writer_connection_survives_a_failed_batch(sqlite_place: Any) -> None:
    """The writer keeps one connection; a batch that fails half way is rolled back on
    it (nothing of it stays) and the next batches commit as usual."""
    clock = ManualClock()
    backend = SQLBackend(sqlite_place.url, clock=clock)
    await backend.open()
    try:
        tasks = backend.tables.tasks

        async def half_then_fail(tx: Tx) -> None:
            await tx.conn.execute(tasks.update().where(tasks.c.task_id == "a").values(error="half"))
            await tx.conn.execute(select(func.nosuchfunction()))

        await backend.create(_record(clock, "a"))
        with pytest.raises(SQLBackendError):
            await backend._exec.write("failing on purpose", half_then_fail)
        record = await backend.get("a")
        assert record is not None and record.error is None
        moved = await backend.transition_many(
            [Transition("a", frozenset({P}), R, TaskUpdate(owner="me"))]
        )
        assert moved[0] is not None and moved[0].status is R
        assert (await backend.stats()).by_status == {R: 1}
    finally:
        await backend.close()


async def test_postgres_fast_writes_survive_losing_their_connection(
    postgres_place: Any,
) -> None:
    """create_many/transition_many keep one asyncpg connection; if the server drops it,
    the write that was on it fails as unavailable (it cannot know whether it
    committed) or, if the loss was seen first, goes to a fresh connection; either way
    the next writes work and the counters stay exact."""
    clock = ManualClock()
    backend = postgres_place.backend(clock)
    await backend.open()
    try:
        assert backend._pg_write is not None and backend._pg_kept is not None
        created = await backend.create_many([_record(clock, f"k{i}") for i in range(3)])
        assert all(result.created for result in created)
        driver = backend._pg_kept._driver
        assert driver is not None
        async with backend.engine.connect() as conn:
            await conn.execute(select(func.pg_terminate_backend(driver.get_server_pid())))
        await asyncio.sleep(0.05)
        with contextlib.suppress(BackendUnavailableError):
            await backend.create_many([_record(clock, "k3")])
        for _ in range(2):
            again = await backend.create_many([_record(clock, "k3")])
            assert again[0].record.task_id == "k3"
        items = [Transition(f"k{i}", frozenset({P}), R, TaskUpdate(owner="me")) for i in range(4)]
        moved = await asyncio.gather(*(backend.transition_many(items[i::2]) for i in range(2)))
        assert all(r is not None and r.status is R for part in moved for r in part)
        assert (await backend.stats()).by_status == {R: 4}
    finally:
        await backend.close()


async def test_postgres_create_many_with_conflicts_and_many_rows(postgres_place: Any) -> None:
    """The array-bound insert skips rows whose id or active key is taken (those go the
    single-create way) and takes more rows than one statement's parameter limit."""
    clock = ManualClock()
    backend = postgres_place.backend(clock)
    await backend.open()
    try:
        first = await backend.create(_record(clock, "held", idempotency_key="key"))
        batch = [_record(clock, f"n{i:04}", args=[i], tags={}) for i in range(2500)]
        batch.insert(3, _record(clock, "other", idempotency_key="key"))
        batch.insert(7, _record(clock, "held"))
        results = await backend.create_many(batch)
        assert [r.created for r in results].count(False) == 2
        assert results[3].record == first.record and results[7].record == first.record
        assert (await backend.stats()).by_status == {P: 2501}
        done = await backend.transition_many(
            [
                Transition(f"n{i:04}", frozenset({P}), S, TaskUpdate(result={"i": i}))
                for i in range(300)
            ]
        )
        assert [r.result for r in done if r is not None] == [{"i": i} for i in range(300)]
        assert (await backend.stats()).by_status == {P: 2201, S: 300}
    finally:
        await backend.close()


def test_raw_driver_errors_are_classified() -> None:
    """Errors asyncpg raises on the fast paths (outside SQLAlchemy) are mapped like the
    ones SQLAlchemy wraps: gone → unavailable, deadlock → retried, others → refused."""
    exceptions = pytest.importorskip("asyncpg.exceptions")
    gone = exceptions.ConnectionDoesNotExistError("connection was closed")
    assert is_unavailable(gone)
    assert isinstance(wrap_error("creating tasks", gone), BackendUnavailableError)
    assert is_unavailable(exceptions.AdminShutdownError("terminating connection"))
    assert is_unavailable(exceptions.InterfaceError("connection is closed"))
    assert is_retryable(exceptions.DeadlockDetectedError("deadlock detected"))
    assert is_retryable(exceptions.SerializationError("could not serialize"))
    refused = exceptions.UniqueViolationError("duplicate key")
    assert not is_unavailable(refused) and not is_retryable(refused)
    error = wrap_error("creating tasks", refused)
    assert isinstance(error, SQLBackendError) and "refused creating tasks" in str(error)


def test_raw_mysql_driver_errors_are_classified() -> None:
    """Errors asyncmy raises on MySQL's fast paths: gone → unavailable, deadlock or lock
    wait → retried, a duplicate key → refused (the callers test for it first)."""
    errors = pytest.importorskip("asyncmy.errors")
    for gone in (
        errors.OperationalError(2013, "Lost connection to MySQL server during query"),
        errors.OperationalError(2006, "MySQL server has gone away"),
        errors.InterfaceError(0, ""),
    ):
        assert is_unavailable(gone) and not is_retryable(gone)
        assert isinstance(wrap_error("changing tasks' status", gone), BackendUnavailableError)
    assert is_retryable(errors.OperationalError(1213, "Deadlock found"))
    assert is_retryable(errors.OperationalError(1205, "Lock wait timeout exceeded"))
    # as the server sends them, with a SQLSTATE beside the number (HY000 for most)
    for number, sqlstate in ((1205, "HY000"), (1213, "40001")):
        sent = errors.OperationalError(number, "from the server")
        sent.sqlstate = sqlstate
        assert is_retryable(sent), number
    shutdown = errors.OperationalError(1053, "Server shutdown in progress")
    shutdown.sqlstate = "08S01"
    assert is_unavailable(shutdown)
    duplicate = errors.IntegrityError(1062, "Duplicate entry")
    assert not is_unavailable(duplicate) and not is_retryable(duplicate)
    assert isinstance(wrap_error("creating tasks", duplicate), SQLBackendError)


async def test_mysql_fast_paths_equal_the_generic_ones(
    mysql_place: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver-direct statements write and return what SQLAlchemy's would: the same
    calls on a backend using them and on one forced onto the generic path end equal."""
    from taskflow_sql import dialect, grouped, sqlite_create

    clock = ManualClock()

    async def scenario(backend: SQLBackend) -> Any:
        now = clock.now()
        batch = [
            _record(clock, f"m{i:03}", args=[i], idempotency_key=f"k{i}", owner="o")
            for i in range(40)
        ]
        created = await backend.create_many(batch)
        again = await backend.create_many([*batch[:5], _record(clock, "m999")])
        started = await backend.transition_many(
            [
                Transition(r.task_id, frozenset({P}), R, TaskUpdate(started_at=now, owner="me"))
                for r in batch[:30]
            ]
        )
        finish = TaskUpdate(finished_at=now, error=None, progress=0.3)
        finished = await backend.transition_many(
            [Transition(r.task_id, frozenset({R}), S, finish) for r in batch[:20]]
            + [Transition("m035", frozenset({R}), S)]
        )
        return (
            [r.record for r in created],
            [(r.created, r.record.task_id) for r in again],
            started,
            finished,
            (await backend.stats()).by_status,
        )

    outcomes = []
    for prefix in ("", "b_"):
        if prefix:  # the second backend: no driver-direct statements

            async def no_driver(_tx: Any) -> None:
                return None

            for module in (dialect, grouped, sqlite_create):
                monkeypatch.setattr(module, "driver_for", no_driver)
        backend = SQLBackend(mysql_place.url, table_prefix=mysql_place.prefix + prefix, clock=clock)
        await backend.open()
        try:
            outcomes.append(await scenario(backend))
        finally:
            await backend.close()
    assert outcomes[0] == outcomes[1]


async def test_sqlite_writer_reports_a_locked_database_as_unavailable(sqlite_place: Any) -> None:
    """The writer begins its transactions on the driver: a write lock held by another
    process past ``busy_timeout`` is still reported as unavailable, and the writer
    works again once the lock is gone."""
    import sqlite3

    clock = ManualClock()
    backend = SQLBackend(sqlite_place.url, clock=clock, sqlite_busy_timeout=0.05)
    await backend.open()
    assert backend.engine.url.database is not None
    other = sqlite3.connect(backend.engine.url.database, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(BackendUnavailableError):
            await backend.create(_record(clock, "blocked"))
        with pytest.raises(BackendUnavailableError):
            await backend.transition_many([Transition("blocked", frozenset({P}), R)])
        other.execute("ROLLBACK")
        assert (await backend.create(_record(clock, "later"))).created
    finally:
        other.close()
        await backend.close()


def test_raw_sqlite_errors_are_classified() -> None:
    import sqlite3

    assert is_unavailable(sqlite3.OperationalError("database is locked"))
    assert is_unavailable(sqlite3.OperationalError("disk I/O error"))
    refused = sqlite3.IntegrityError("UNIQUE constraint failed: t.x")
    assert not is_unavailable(refused) and not is_retryable(refused)
    assert isinstance(wrap_error("creating tasks", refused), SQLBackendError)
    assert not is_unavailable(sqlite3.InterfaceError("Error binding parameter 1"))


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 12, 4, 21, 30, 5, 123456, tzinfo=timezone.utc),
        datetime(2026, 12, 4, 21, 30, 5, tzinfo=timezone.utc),  # no microseconds
        datetime(2026, 12, 4, 21, 30, 5, 7),  # naive: taken as UTC
        datetime(2026, 12, 4, 23, 0, 0, 1, tzinfo=timezone(timedelta(hours=2))),
        datetime(999, 1, 2, 3, 4, 5, 600000, tzinfo=timezone.utc),  # a 3-digit year
    ],
)
def test_the_writers_datetime_text_is_the_columns_own(moment: datetime) -> None:
    """The SQLite writer binds datetimes with ``sqlite_stamp``; its text must be what
    the column type writes everywhere else, or reads and range filters would miss
    rows written by the writer."""
    from sqlalchemy.dialects import sqlite

    dialect = sqlite.dialect()
    column = UTCDateTime()
    expected = column.dialect_impl(dialect).bind_processor(dialect)(  # type: ignore[misc]
        column.process_bind_param(moment, dialect)
    )
    assert sqlite_stamp(moment) == expected


async def test_sqlite_writer_stores_empty_and_boolean_values_as_given(sqlite_place: Any) -> None:
    """The writer binds booleans as 1/0 and fills a batch of status changes up to its
    statement's size with rows that match no task: records with different empty and
    boolean values, created in one batch, read back exactly as given, and three status
    changes in a statement sized four change only their own tasks."""
    clock = ManualClock()
    backend = SQLBackend(sqlite_place.url, clock=clock)
    await backend.open()
    try:
        now = clock.now()
        batch = [
            _record(clock, "bare"),
            _record(
                clock,
                "full",
                status=S,
                args=[1, None, True],
                kwargs={"flag": False},
                tags={"tenant": "t1"},
                idempotency_key="key-full",
                attempt=2,
                max_retries=3,
                requeue_on_interrupt=True,
                started_at=now,
                finished_at=now + timedelta(seconds=2),
                error="RuntimeError: boom",
                result={"ok": False},
                progress=0.5,
                cancel_requested=True,
                owner="instance-a",
            ),
            _record(clock, "keyed", idempotency_key="key-2", requeue_on_interrupt=False),
            _record(clock, "bare2", result=[1, 2]),
        ]
        created = await backend.create_many(batch)
        assert [result.created for result in created] == [True] * 4
        for record in batch:
            stored = await backend.get(record.task_id)
            assert stored == record.model_copy(update={"logs": []})
        moved = await backend.transition_many(  # three rows: a statement sized four
            [
                Transition(task_id, frozenset({P}), R, TaskUpdate(started_at=now, attempt=1))
                for task_id in ("bare", "keyed", "bare2")
            ]
        )
        assert all(record is not None and record.status is R for record in moved)
        assert (await backend.stats()).by_status == {R: 3, S: 1}
    finally:
        await backend.close()
