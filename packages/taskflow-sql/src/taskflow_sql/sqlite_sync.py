"""The SQLite writer's transactions, run in one thread on the stdlib ``sqlite3`` driver.

Through aiosqlite every statement is a round trip to aiosqlite's thread and back to the
event loop (a few hundred microseconds each), which would cap a group-commit batch at a
few thousand statements per second however few fsyncs it costs. So the SQLite writer
runs each whole batch in a single call on its own thread, with a synchronous engine
(``sqlite+pysqlite``) on the same file and the same pragmas.

The write operations are the same ``async def op(tx)`` functions the other engines run:
here ``tx.conn`` is a :class:`SyncTxConnection` whose ``execute`` runs the statement
immediately and returns an already-finished coroutine, so an operation completes on the
first ``send()`` without an event loop (:func:`drive`). Reads stay on aiosqlite.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Awaitable, Coroutine, Sequence
from functools import lru_cache
from typing import Any, TypeVar

from sqlalchemy import Engine, Table, create_engine
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Dialect, Result

from .context import SQLContext, Tx, WriteOp
from .engine import SQLiteSettings, configure_sqlite
from .errors import sqlite_locked

__all__ = ["SQLiteBatchRunner", "SyncTxConnection", "add_counts_raw", "drive"]

T = TypeVar("T")


def drive(awaitable: Awaitable[T]) -> T:
    """Run a coroutine that never suspends to completion, without an event loop.

    Raises:
        RuntimeError: the coroutine awaited something that really suspends.
    """
    if not isinstance(awaitable, Coroutine):
        raise TypeError("SQLite write operations must be 'async def' functions")
    coro: Coroutine[Any, Any, T] = awaitable
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a SQLite write operation awaited something that suspends")


class SyncTxConnection:
    """The part of ``AsyncConnection`` write operations use, over a sync ``Connection``."""

    def __init__(self, conn: Connection) -> None:
        self.sync = conn

    async def execute(self, statement: Any, parameters: Any = None) -> Result[Any]:
        """Execute now; see ``AsyncConnection.execute``."""
        return self.sync.execute(statement, parameters)

    async def scalar(self, statement: Any, parameters: Any = None) -> Any:
        """Execute now and return the first column of the first row."""
        return self.sync.scalar(statement, parameters)


INLINE_ROWS = 64
"""The most rows a batch may write to run on the event loop's thread (see
:meth:`SQLiteBatchRunner.run`): about 1.5 ms of work at most. The writer thread's
batches hold the GIL for their Python half anyway (binding values, reading rows), so
only SQLite's own work could overlap with the loop; for a batch of this size that is
less than the hop there and back costs (measured: E on SQLite ~4 % faster, S2 no
slower than with 8)."""

INLINE_STREAK = 64
"""Batches run on the loop's thread in a row before one goes to the writer thread, which
checkpoints the WAL when it has grown (see :meth:`SQLiteBatchRunner.run`)."""

_NO_FSYNC_AT_COMMIT = frozenset({"OFF", "NORMAL"})


class _Busy(Exception):
    """Another connection holds SQLite's write lock (the loop's thread never waits)."""


class SQLiteBatchRunner:
    """Runs batches of write operations in ``BEGIN IMMEDIATE`` transactions on one thread.

    The thread keeps one connection for the backend's life (a pool checkout and return
    per batch cost about as much as a one-row transaction) and starts, commits and
    rolls back on the stdlib driver itself: SQLAlchemy's ``begin``/``commit`` add tens
    of microseconds per batch to a transaction that costs ~100. A statement an
    operation runs through SQLAlchemy joins the open transaction (its autobegin emits
    nothing, see :func:`taskflow_sql.engine.configure_sqlite`), and it is then ended
    through SQLAlchemy, so both always agree on the transaction's state.

    A small batch (see :meth:`run`) runs on the event loop's thread instead, on the
    same connection: under ``synchronous=NORMAL`` in WAL mode a commit writes to the
    WAL without an fsync, and a transaction of a few rows costs less than the hop to
    the writer thread and back. The connection then never waits: its ``busy_timeout``
    is 0 and its automatic checkpoint is off outside the writer thread's own batches,
    which set both back for their transaction.

    Args:
        ctx: the backend's context (its engine's URL names the database file).
        settings: the pragmas to set on the writer's connection.
    """

    def __init__(self, ctx: SQLContext, settings: SQLiteSettings) -> None:
        self._ctx = ctx
        url = ctx.engine.url.set(drivername="sqlite+pysqlite")
        self._engine: Engine = create_engine(
            url, connect_args={"check_same_thread": False}, pool_size=1, max_overflow=0
        )
        configure_sqlite(self._engine, settings)
        self._conn: Connection | None = None
        self._inline = settings.synchronous in _NO_FSYNC_AT_COMMIT
        self._waiting = (
            f"PRAGMA busy_timeout = {settings.busy_timeout_ms}",
            "PRAGMA wal_autocheckpoint = 1000",
        )
        self._streak = 0
        """Batches run on the loop's thread since the writer thread's last one."""
        # A bare thread and queue rather than a ThreadPoolExecutor: each batch's hop
        # there and back is then one queue put and one call_soon_threadsafe (a
        # one-row write's round trip loses ~20 µs of executor and future chaining).
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._serve, name="taskflow-sqlite-writer", daemon=True
        )
        self._thread.start()

    async def run(self, ops: Sequence[WriteOp[Any]], rows: int | None = None) -> list[Any]:
        """Run ``ops`` in one transaction; results in order.

        ``rows``: how many rows the batch writes at most, when known. A batch of at
        most :data:`INLINE_ROWS` rows runs right here on the event loop's thread
        (when commits do not fsync, and another connection does not hold the write
        lock at that moment); any other batch, and one in every
        :data:`INLINE_STREAK`, runs on the writer thread.
        """
        if (
            self._inline
            and rows is not None
            and rows <= INLINE_ROWS
            and self._streak < INLINE_STREAK
        ):
            try:
                results = self._run(list(ops), inline=True)
            except _Busy:
                pass  # the writer thread waits for the lock instead
            else:
                self._streak += 1
                return results
        self._streak = 0
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._jobs.put((list(ops), loop, future))
        return await future

    def _serve(self) -> None:
        """The writer thread: run each batch and hand its outcome to the caller's loop."""
        while True:
            job = self._jobs.get()
            if job is None:
                self._close()
                return
            ops, loop, future = job
            try:
                outcome: tuple[Any, BaseException | None] = (self._run(ops), None)
            except BaseException as exc:  # handed to the caller, as an executor would
                outcome = (None, exc)
            with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
                loop.call_soon_threadsafe(_settle, future, *outcome)

    def _connection(self) -> Connection:
        if self._conn is None:
            # "joined": the runner has begun the transaction on the driver already.
            conn = self._engine.connect().execution_options(taskflow_write="joined")
            if self._inline:  # never wait, nor checkpoint, outside the writer thread
                driver = conn.connection.driver_connection
                assert driver is not None
                driver.execute("PRAGMA busy_timeout = 0")
                driver.execute("PRAGMA wal_autocheckpoint = 0")
            self._conn = conn
        return self._conn

    def _run(self, ops: list[WriteOp[Any]], *, inline: bool = False) -> list[Any]:
        conn = self._connection()
        driver = conn.connection.driver_connection
        assert driver is not None
        if inline:
            try:
                driver.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if sqlite_locked(exc):
                    raise _Busy from exc
                raise
        elif self._inline:
            # The writer thread waits for another process's lock, and its commits
            # checkpoint the WAL once it has grown (the loop's never do).
            for pragma in self._waiting:
                driver.execute(pragma)
            try:
                driver.execute("BEGIN IMMEDIATE")
            finally:
                driver.execute("PRAGMA busy_timeout = 0")
        else:
            driver.execute("BEGIN IMMEDIATE")
        try:
            tx = Tx(self._ctx, SyncTxConnection(conn))  # type: ignore[arg-type]
            results: list[Any] = [drive(op(tx)) for op in ops]
            if tx.deltas:
                add_counts_raw(tx, driver)
            if conn.in_transaction():
                conn.commit()
            else:
                driver.execute("COMMIT")
        except BaseException:
            self._abort(conn, driver)
            raise
        finally:
            if self._inline and not inline and self._conn is not None:
                with contextlib.suppress(Exception):  # a broken connection is dropped
                    driver.execute("PRAGMA wal_autocheckpoint = 0")
        return results

    def _abort(self, conn: Connection, driver: Any) -> None:
        """Roll back after a failed batch; drop the connection if even that fails."""
        try:
            if conn.in_transaction():
                conn.rollback()
            elif driver.in_transaction:
                driver.execute("ROLLBACK")
        except Exception:
            self._conn = None
            with contextlib.suppress(Exception):
                conn.invalidate()
                conn.close()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        """Finish the batches handed over, close the connection and stop the thread."""
        self._jobs.put(None)
        self._thread.join()
        self._engine.dispose()


_Job = tuple[list[WriteOp[Any]], asyncio.AbstractEventLoop, "asyncio.Future[list[Any]]"]


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # the caller was cancelled
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


@lru_cache(maxsize=16)
def _counts_sql(counters: Table) -> str:
    """The SQLite counter upsert of :func:`taskflow_sql.dialect.add_counts`, positional."""
    stmt = sqlite_insert(counters)
    stmt = stmt.on_conflict_do_update(
        index_elements=[counters.c.func_name, counters.c.status, counters.c.slot],
        set_={"n": counters.c.n + stmt.excluded.n},
    )
    dialect: Dialect = sqlite.dialect(paramstyle="qmark")
    return str(stmt.compile(dialect=dialect, column_keys=["func_name", "status", "slot", "n"]))


def add_counts_raw(tx: Tx, driver: Any) -> None:
    """:func:`taskflow_sql.dialect.add_counts` on the stdlib driver (same rows, same
    order): every value is a plain ``str``/``int``, so there is nothing to convert."""
    rows = [
        (func, status, slot, delta)
        for (func, status, slot), delta in sorted(tx.deltas.items())
        if delta
    ]
    tx.deltas.clear()
    if rows:
        driver.executemany(_counts_sql(tx.ctx.tables.counters), rows)
