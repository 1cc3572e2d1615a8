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
from collections.abc import Awaitable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import Connection, Result

from .context import SQLContext, Tx, WriteOp
from .dialect import add_counts
from .engine import SQLiteSettings, configure_sqlite

__all__ = ["SQLiteBatchRunner", "SyncTxConnection", "drive"]

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


class SQLiteBatchRunner:
    """Runs batches of write operations in ``BEGIN IMMEDIATE`` transactions on one thread.

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
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="taskflow-sqlite")

    async def run(self, ops: Sequence[WriteOp[Any]]) -> list[Any]:
        """Run ``ops`` in one transaction on the writer thread; results in order."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._run, list(ops))

    def _run(self, ops: list[WriteOp[Any]]) -> list[Any]:
        with self._engine.connect() as conn:
            conn = conn.execution_options(taskflow_write=True)
            with conn.begin():
                tx = Tx(self._ctx, SyncTxConnection(conn))  # type: ignore[arg-type]
                results: list[Any] = [drive(op(tx)) for op in ops]
                if tx.deltas:
                    drive(add_counts(tx))
            return results

    def close(self) -> None:
        """Stop the thread and close the writer's connection."""
        self._thread.shutdown(wait=True)
        self._engine.dispose()
