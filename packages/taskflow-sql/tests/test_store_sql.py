"""SQL-specific behaviour: purge batches, group commit, counters, big events."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.events import LogEvent
from fastapi_taskflow.models import (
    LogEntry,
    TaskQuery,
    TaskRecord,
    TaskStatus,
    TaskUpdate,
)
from taskflow_sql import SQLBackend, SQLBackendError
from taskflow_sql.context import Tx

pytestmark = pytest.mark.anyio


def _record(clock: ManualClock, task_id: str, **fields: Any) -> TaskRecord:
    now = clock.now()
    fields.setdefault("func_name", "jobs.f")
    return TaskRecord(task_id=task_id, created_at=now, updated_at=now, **fields)


@pytest.fixture
async def backend(place: Any) -> Any:
    backend = SQLBackend(
        place.url, table_prefix=place.prefix, schema=place.schema, clock=ManualClock()
    )
    await backend.open()
    yield backend
    await backend.close()


async def _count(backend: SQLBackend, table: Any) -> int:
    async with backend.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


async def test_purge_works_in_bounded_batches(backend: SQLBackend) -> None:
    clock = backend.clock
    assert isinstance(clock, ManualClock)
    finished = clock.now()
    records = [
        _record(
            clock,
            f"done{i:02}",
            status=TaskStatus.SUCCESS,
            finished_at=finished,
            tags={"team": "a"},
        )
        for i in range(25)
    ]
    records.append(_record(clock, "active", tags={"team": "a"}))
    await backend.create_many(records)
    for record in records:
        await backend.append_logs(record.task_id, [LogEntry(timestamp=finished, message="x")] * 2)
    clock.advance(60)
    cutoff = clock.now()
    assert [await backend.purge(finished_before=cutoff, batch_size=10) for _ in range(4)] == [
        10,
        10,
        5,
        0,
    ]
    assert await backend.get("active") is not None
    assert await _count(backend, backend.tables.tasks) == 1
    assert await _count(backend, backend.tables.logs) == 2
    assert await _count(backend, backend.tables.tags) == 1
    stats = await backend.stats()
    assert stats.total == 1 and stats.by_status == {TaskStatus.PENDING: 1}


async def test_purge_respects_the_cutoff(backend: SQLBackend) -> None:
    clock = backend.clock
    assert isinstance(clock, ManualClock)
    await backend.create(_record(clock, "old", status=TaskStatus.FAILED, finished_at=clock.now()))
    clock.advance(10)
    await backend.create(_record(clock, "new", status=TaskStatus.FAILED, finished_at=clock.now()))
    assert await backend.purge(finished_before=clock.now()) == 1
    assert await backend.get("new") is not None


async def test_counters_stay_exact_under_concurrent_transitions(backend: SQLBackend) -> None:
    clock = backend.clock
    assert isinstance(clock, ManualClock)
    ids = [f"c{i:03}" for i in range(60)]
    await backend.create_many([_record(clock, i, func_name=f"f{int(i[1:]) % 3}") for i in ids])

    async def run(task_id: str) -> None:
        await backend.transition(task_id, expected=[TaskStatus.PENDING], new=TaskStatus.RUNNING)
        await backend.transition(
            task_id,
            expected=[TaskStatus.PENDING, TaskStatus.RUNNING],
            new=TaskStatus.SUCCESS,
            update=TaskUpdate(finished_at=clock.now(), result={"ok": task_id}),
        )

    await asyncio.gather(*(run(i) for i in ids for _ in range(2)))
    stats = await backend.stats()
    assert stats.total == 60
    assert stats.by_status == {TaskStatus.SUCCESS: 60}
    assert {name: sum(c.values()) for name, c in stats.by_func.items()} == {
        "f0": 20,
        "f1": 20,
        "f2": 20,
    }
    got = await backend.get("c007")
    assert got is not None and got.result == {"ok": "c007"}


async def test_tag_filter_with_long_values(backend: SQLBackend) -> None:
    clock = backend.clock
    assert isinstance(clock, ManualClock)
    long_value = "v" * 1000
    await backend.create(_record(clock, "long", tags={"k": long_value, "x": "1"}))
    await backend.create(_record(clock, "short", tags={"k": "v", "x": "1"}))
    page = await backend.query(TaskQuery(tags={"k": long_value}))
    assert [r.task_id for r in page.items] == ["long"]
    assert page.items[0].tags["k"] == long_value
    page = await backend.query(TaskQuery(tags={"x": "1"}))
    assert sorted(r.task_id for r in page.items) == ["long", "short"]


async def test_group_commit_batches_and_answers_each_caller(sqlite_place: Any) -> None:
    clock = ManualClock()
    backend = SQLBackend(sqlite_place.url, clock=clock)
    await backend.open()
    try:
        writer = backend._exec.writer
        assert writer is not None
        before = writer.batches
        ids = [f"g{i:04}" for i in range(400)]
        results = await asyncio.gather(
            *(
                backend.create(_record(clock, i, idempotency_key=f"k{int(i[1:]) % 100}"))
                for i in ids
            )
        )
        # Each caller got its own answer: 100 keys → 100 created, others see the holder.
        created = [r for r in results if r.created]
        assert len(created) == 100
        for task_id, result in zip(ids, results, strict=True):
            key = f"k{int(task_id[1:]) % 100}"
            assert result.record.idempotency_key == key
            assert result.created == (result.record.task_id == task_id)
        assert writer.batches - before < 40, "creates were not grouped into transactions"

        moved = await asyncio.gather(
            *(
                backend.transition(
                    r.record.task_id, expected=[TaskStatus.PENDING], new=TaskStatus.RUNNING
                )
                for r in created
                for _ in range(3)
            )
        )
        winners = [m for m in moved if m is not None]
        assert len(winners) == 100
        assert {w.task_id for w in winners} == {r.record.task_id for r in created}
    finally:
        await backend.close()


async def test_a_failing_operation_does_not_fail_its_batch(sqlite_place: Any) -> None:
    clock = ManualClock()
    backend = SQLBackend(sqlite_place.url, clock=clock)
    await backend.open()
    try:

        async def broken(tx: Tx) -> None:
            await tx.conn.execute(select(func.nosuchfunction()))

        good = [backend.create(_record(clock, f"ok{i}")) for i in range(20)]
        bad = backend._exec.write("doing something broken", broken)
        results = await asyncio.gather(*good, bad, return_exceptions=True)
        assert all(not isinstance(r, BaseException) and r.created for r in results[:-1])
        assert isinstance(results[-1], SQLBackendError)
        assert (await backend.stats()).total == 20
    finally:
        await backend.close()


async def test_sqlite_open_cancelled_while_setting_up_its_write_connection_returns_it(
    sqlite_place: Any,
    cancelled_at_the_driver: Callable[..., Awaitable[None]],
) -> None:
    """An open() cancelled (an app's startup cancelled, say) just after the schema
    check checked out its write connection, while SQLite's write mode is set on it,
    returns that connection to the pool instead of leaving it checked out for the
    garbage collector to find; the backend then opens as usual."""
    backend = SQLBackend(sqlite_place.url, clock=ManualClock())
    await cancelled_at_the_driver(backend.open, step="execution_options")
    backend = SQLBackend(sqlite_place.url, clock=ManualClock())
    await backend.open()
    try:
        assert await backend.get("any") is None
    finally:
        await backend.close()


async def test_sqlite_open_that_fails_after_starting_its_writer_leaves_nothing_running(
    sqlite_place: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An open() that fails after its writer started (the fast reader cannot open the
    file, say) stops the writer's task and thread before raising, and a later open()
    works."""
    from taskflow_sql import backend as backend_module

    def unreadable(*args: Any, **kwargs: Any) -> Any:
        raise OSError("the reader cannot open the file")

    def writers() -> tuple[list[str], list[str]]:
        tasks = [t.get_name() for t in asyncio.all_tasks() if not t.done()]
        threads = [t.name for t in threading.enumerate()]
        return (
            [name for name in tasks if name == "taskflow-sqlite-writer"],
            [name for name in threads if name == "taskflow-sqlite-writer"],
        )

    before = writers()
    backend = SQLBackend(sqlite_place.url, clock=ManualClock())
    with monkeypatch.context() as patch:
        patch.setattr(backend_module, "SQLiteReader", unreadable)
        with pytest.raises(OSError, match="cannot open"):
            await backend.open()
    assert writers() == before
    await backend.open()
    try:
        assert await backend.get("any") is None
        assert writers() != before
    finally:
        await backend.close()
    assert writers() == before


class HeldReturns:
    """Connections' returns to the pool, each held until :attr:`go_on` is set (while
    patched in by :func:`held_returns`)."""

    def __init__(self) -> None:
        self.returning = asyncio.Event()
        self.go_on = asyncio.Event()
        self._real_close = AsyncConnection.close

    async def close(self, conn: AsyncConnection) -> None:
        self.returning.set()
        await self.go_on.wait()
        await self._real_close(conn)

    async def read_being_returned(self, backend: SQLBackend) -> asyncio.Task[Any]:
        """Start a read on ``backend``; return it once its connection's return is held."""
        read = asyncio.ensure_future(backend.heartbeats())
        await self.returning.wait()
        return read

    def tasks(self) -> list[asyncio.Task[Any]]:
        """The asyncio tasks whose coroutine is a held return."""
        return [
            task
            for task in asyncio.all_tasks()
            if getattr(task.get_coro(), "__qualname__", "") == "HeldReturns.close"
        ]


@contextlib.contextmanager
def held_returns(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldReturns]:
    """Hold every connection's return to the pool (see :class:`HeldReturns`)."""
    held = HeldReturns()
    with monkeypatch.context() as patch:
        patch.setattr(AsyncConnection, "close", lambda conn: held.close(conn))
        yield held


async def test_a_read_cancelled_while_returning_its_connection_returns_it(
    place: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A read cancelled while its connection goes back to the pool (a shutdown
    cancelling the recovery loop in the middle of a scan) still returns it, and nothing
    is logged: cancelled inside SQLAlchemy's return of a connection, the pool logs
    "Exception during reset or similar" with a traceback and drops the connection."""
    backend = place.backend(ManualClock())
    await backend.open()
    try:
        with held_returns(monkeypatch) as held:
            read = await held.read_being_returned(backend)
            read.cancel()
            await asyncio.sleep(0)  # the cancellation lands while the connection returns
            held.go_on.set()
            with pytest.raises(asyncio.CancelledError):
                await read
        assert backend.engine.sync_engine.pool.checkedout() == 0
        assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []
        assert await backend.heartbeats() == {}  # and the pool serves the next read
    finally:
        await backend.close()


async def test_a_read_whose_loop_is_torn_down_while_it_returns_its_connection_returns_it(
    sqlite_place: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loop torn down while a read returns its connection cancels every task it has,
    the return's own task too (asyncio.run() does): the connection still goes back to
    the pool, rather than being left checked out for the garbage collector (SQLAlchemy's
    "non-checked-in connection" warning)."""
    backend = SQLBackend(sqlite_place.url, clock=ManualClock())
    await backend.open()
    try:
        with held_returns(monkeypatch) as held:
            read = await held.read_being_returned(backend)
            returns = held.tasks()
            assert len(returns) == 1
            torn_down = [read, *returns]
            for task in torn_down:  # what a loop's teardown does to every task it has
                task.cancel()
            await asyncio.sleep(0)
            held.go_on.set()
            await asyncio.wait(torn_down, timeout=10)
            assert read.cancelled()
        assert backend.engine.sync_engine.pool.checkedout() == 0
    finally:
        await backend.close()


async def test_sqlite_get_that_finds_the_database_locked_waits_on_the_reader_thread(
    sqlite_place: Any, tmp_path: Any
) -> None:
    """``get`` reads on the event loop's thread with a connection that never waits; one
    that meets a lock (SQLITE_BUSY) is answered from the reader thread, whose connection
    waits the busy timeout, instead of failing. The event loop's connection here is one
    to a database really locked by another connection's exclusive transaction."""
    clock = ManualClock()
    backend = SQLBackend(sqlite_place.url, clock=clock)
    await backend.open()
    elsewhere = tmp_path / "locked.db"
    holder = sqlite3.connect(elsewhere, isolation_level=None)
    try:
        await backend.create(_record(clock, "t1"))
        reader = backend._reader
        assert reader is not None
        assert (await backend.get("t1")) is not None  # the loop's connection, made
        holder.execute("CREATE TABLE t (x)")
        holder.execute("BEGIN EXCLUSIVE")
        reader._local.conn = sqlite3.connect(elsewhere, timeout=0, isolation_level=None)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            reader._get("t1", waits=False)

        found = await backend.get("t1")
        assert found is not None and found.task_id == "t1"
    finally:
        holder.close()
        await backend.close()


async def test_close_finishes_queued_writes(sqlite_place: Any) -> None:
    clock = ManualClock()
    backend = SQLBackend(sqlite_place.url, clock=clock)
    await backend.open()
    pending = [asyncio.ensure_future(backend.create(_record(clock, f"q{i}"))) for i in range(50)]
    await asyncio.sleep(0)
    await backend.close()
    assert all(task.result().created for task in pending)
    reopened = SQLBackend(sqlite_place.url, clock=clock)
    await reopened.open()
    try:
        assert (await reopened.stats()).total == 50
    finally:
        await reopened.close()


async def test_large_events_are_delivered(backend: SQLBackend) -> None:
    clock = backend.clock
    event = LogEvent(task_id="big", func_name="f", timestamp=clock.now(), message="x" * 20_000)
    with anyio.fail_after(10):
        async with backend.subscribe() as stream:
            await backend.publish(event)
            assert await anext(stream) == event


async def test_event_rows_are_trimmed(sqlite_place: Any) -> None:
    """Publishers keep the newest ``event_retention`` rows and none older, except rows
    younger than a minute: a burst larger than the retention is left for the pollers
    (a batch of 12,000 log lines lost its first 2,000 to its own trim)."""
    clock = ManualClock()
    backend = SQLBackend(sqlite_place.url, clock=clock, event_retention=50)

    def events(count: int) -> list[LogEvent]:
        return [
            LogEvent(task_id=f"e{i}", func_name="f", timestamp=clock.now(), message="m")
            for i in range(count)
        ]

    await backend.open()
    try:
        await backend.publish_many(events(300))
        for event in events(20):
            await backend.publish(event)
        assert await _count(backend, backend.tables.events) == 320  # all under a minute
        clock.advance(61)
        for event in events(100):
            await backend.publish(event)
        assert await _count(backend, backend.tables.events) == 100  # the old ones went
    finally:
        await backend.close()


async def test_postgres_get_survives_losing_its_kept_connection(postgres_place: Any) -> None:
    """get() keeps one connection for itself; if the server drops it, the next get()
    still answers (from a fresh pooled connection), and later ones keep working."""
    clock = ManualClock()
    backend = postgres_place.backend(clock)
    await backend.open()
    try:
        await backend.create(_record(clock, "kept"))
        await backend.append_logs("kept", [LogEntry(timestamp=clock.now(), message="m")])
        first = await backend.get("kept")
        assert first is not None and [e.message for e in first.logs] == ["m"]
        kept = backend._pg_kept
        assert kept is not None and kept._driver is not None
        pid = kept._driver.get_server_pid()
        async with backend.engine.connect() as conn:
            await conn.execute(select(func.pg_terminate_backend(pid)))
        for _ in range(3):
            again = await backend.get("kept")
            assert again == first
        assert await backend.get("missing") is None
        many = await asyncio.gather(*(backend.get("kept") for _ in range(20)))
        assert all(record == first for record in many)
    finally:
        await backend.close()


async def test_postgres_get_cancelled_while_keeping_its_connection_returns_it(
    postgres_place: Any,
    cancelled_at_the_driver: Callable[..., Awaitable[None]],
) -> None:
    """A get() cancelled between checking out the connection it keeps and reaching its
    driver returns the connection to the pool, rather than leaving it checked out for
    the garbage collector to find (SQLAlchemy then terminates it with a warning)."""
    clock = ManualClock()
    backend = postgres_place.backend(clock)
    await backend.open()
    try:
        pool = backend.engine.sync_engine.pool
        assert pool.checkedout() == 0
        await cancelled_at_the_driver(lambda: backend.get("any"))
        assert pool.checkedout() == 0
        assert await backend.get("any") is None  # and the next get() keeps one as usual
        assert pool.checkedout() == 1
    finally:
        await backend.close()


async def test_postgres_kept_connection_checked_out_while_closing_is_returned(
    postgres_place: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write or get() still checking out the connection it keeps when the backend
    closes (a shutdown racing the last group-commit write) returns it when done,
    instead of keeping it after close() and leaving it to the garbage collector."""
    from taskflow_sql import pg_kept

    clock = ManualClock()
    backend = postgres_place.backend(clock)
    await backend.open()
    try:
        pool = backend.engine.sync_engine.pool
        kept = backend._pg_kept
        assert kept is not None and pool.checkedout() == 0
        checking_out, go_on = asyncio.Event(), asyncio.Event()
        real_connect = pg_kept.connect

        async def slow_connect(ctx: Any, *, write: bool) -> Any:
            checking_out.set()
            await go_on.wait()
            return await real_connect(ctx, write=write)

        monkeypatch.setattr(pg_kept, "connect", slow_connect)
        reading = asyncio.ensure_future(backend.get("any"))
        await asyncio.wait_for(checking_out.wait(), 5)
        await kept.close()  # what backend.close() does first
        go_on.set()
        assert await asyncio.wait_for(reading, 5) is None
        assert pool.checkedout() == 0
    finally:
        await backend.close()


async def test_log_times_are_read_back_whatever_their_fraction_of_a_second(
    backend: SQLBackend,
) -> None:
    """PostgreSQL writes a log line's time in JSON with the trailing zeros of its
    fraction dropped (``.81+00:00``): Python 3.10's ``fromisoformat`` refused that, so
    reading a task failed whenever one of its lines had such a time (one in ten)."""
    clock = ManualClock()
    record = _record(clock, "frac-1")
    assert (await backend.create(record)).created
    base = clock.now().replace(microsecond=0)
    moments = [base.replace(microsecond=us) for us in (0, 810000, 811430, 500, 999999)]
    entries = [LogEntry(timestamp=moment, message=f"line {n}") for n, moment in enumerate(moments)]
    await backend.append_logs("frac-1", entries)
    found = await backend.get("frac-1")
    assert found is not None
    assert [entry.timestamp for entry in found.logs] == moments
