"""Running operations in transactions: retries, group commit and error wrapping."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, TypeVar, cast

from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import QueuePool

from .context import ReadOp, SingleOp, SQLContext, Tx, WriteOp
from .dialect import add_counts
from .engine import SQLiteSettings
from .errors import retried, unavailable, unknown_option, wrap_error
from .sqlite_sync import SQLiteBatchRunner
from .sqlite_writer import SQLiteWriter

__all__ = ["Executor", "connect", "release"]

T = TypeVar("T")


async def connect(ctx: SQLContext, *, write: bool) -> AsyncConnection:
    """Check a connection out of the pool; unreachable database → BackendUnavailableError.

    ``write=True`` makes SQLite start its transactions with ``BEGIN IMMEDIATE``.

    The checkout runs as a task of its own, which a cancellation of the caller (a
    shutdown stopping a worker or a heartbeat) does not cut short: a checkout may be
    making a new connection, and a connect cancelled half way can leave the driver's
    own futures failing with nobody to await them (asyncpg: cancelled after its socket
    connected but before ``create_connection()`` returned, the future of the server's
    answer to its SSL request fails with "unexpected connection_lost() call" and is
    logged as "Future exception was never retrieved"). A cancelled caller waits for the
    checkout (at most :data:`RELEASE_SECONDS`), returns the connection to the pool, then
    its cancellation goes on. When the pool has an idle connection, no connection is
    made, and the checkout runs in the caller's task (a task per checkout costs more
    than the checkout itself).
    """
    pool = ctx.engine.sync_engine.pool
    if isinstance(pool, QueuePool) and pool.checkedin():
        return await _checkout(ctx, write=write)
    checkout = asyncio.ensure_future(_checkout(ctx, write=write))
    try:
        return await asyncio.shield(checkout)
    except asyncio.CancelledError:
        await _give_back(checkout)
        raise


async def _checkout(ctx: SQLContext, *, write: bool) -> AsyncConnection:
    try:
        conn = await ctx.engine.connect()
    except Exception as exc:
        raise (unknown_option(exc, ctx.engine.url) or unavailable("connecting", exc)) from exc
    if write and ctx.kind == "sqlite":
        try:
            conn = await conn.execution_options(taskflow_write=True)
        except BaseException:  # cancelled, say: nobody else would return the checkout
            with contextlib.suppress(Exception):
                await release(conn)
            raise
    return conn


async def _give_back(checkout: asyncio.Future[AsyncConnection]) -> None:
    """Let the checkout of a cancelled caller finish and return its connection; one
    still under way after :data:`RELEASE_SECONDS` (or when the caller is cancelled
    again meanwhile) returns its connection by itself once it has one."""
    try:
        await _outwait(checkout)
    except BaseException:  # cancelled again: the checkout returns its connection itself
        checkout.add_done_callback(_release_when_made)
        raise
    if not checkout.done():
        checkout.add_done_callback(_release_when_made)
        return
    if not checkout.cancelled() and checkout.exception() is None:
        with contextlib.suppress(Exception):
            await release(checkout.result())


_returning: set[asyncio.Task[None]] = set()
"""Returns started by :func:`_release_when_made`, kept referenced until they end."""


def _release_when_made(checkout: asyncio.Future[AsyncConnection]) -> None:
    if checkout.cancelled() or checkout.exception() is not None:
        return
    returning = checkout.get_loop().create_task(release(checkout.result()))
    _returning.add(returning)
    returning.add_done_callback(_returning.discard)


RELEASE_SECONDS = 5.0
"""How long a cancelled caller waits for its connection to be returned to the pool."""


async def release(conn: AsyncConnection) -> None:
    """Return ``conn`` to its pool, also when the caller is cancelled meanwhile.

    Returning a connection awaits the driver (the pool rolls back what is left of its
    transaction). Cancelled at that moment, SQLAlchemy logs "Exception during reset or
    similar" with a traceback and drops the connection: what a shutdown did when it
    cancelled a loop in the middle of a read. So the return runs as a task of its own,
    and a caller cancelled meanwhile waits for it (at most :data:`RELEASE_SECONDS`)
    before its cancellation goes on.
    """
    closing = asyncio.ensure_future(conn.close())
    try:
        await asyncio.shield(closing)
    except asyncio.CancelledError:
        await _outwait(closing)
        if closing.cancelled():
            # cancelled with its caller: a loop being torn down cancels every task it
            # has (asyncio.run() does), then runs them to their end; a return started
            # now is not among them and runs (closing twice is harmless)
            await _outwait(asyncio.ensure_future(conn.close()))
        raise


async def _outwait(closing: asyncio.Future[Any]) -> None:
    """Wait for a return of a cancelled caller (at most :data:`RELEASE_SECONDS`); what
    it raises, if anything, is not that caller's to see."""
    closing.add_done_callback(_retrieve)
    await asyncio.wait([closing], timeout=RELEASE_SECONDS)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def run_transaction(ctx: SQLContext, ops: Sequence[WriteOp[Any]]) -> list[Any]:
    """Run ``ops`` in order in one write transaction, write counters, and commit."""
    conn = await connect(ctx, write=True)
    try:
        async with conn.begin():
            tx = Tx(ctx, conn)
            results = [await op(tx) for op in ops]
            if tx.deltas:
                await add_counts(tx)
        return results
    finally:
        await release(conn)


class Executor:
    """Runs read and write operations for one backend.

    On SQLite, writes go through the :class:`SQLiteWriter` (group commit), whose batches
    run on one thread with the stdlib driver (:mod:`taskflow_sql.sqlite_sync`). On
    PostgreSQL and MySQL each write is its own transaction, retried on deadlock or
    serialization failure.
    """

    def __init__(
        self,
        ctx: SQLContext,
        *,
        sqlite: SQLiteSettings | None = None,
        max_batch: int = 512,
        window: float = 0.0,
    ):
        self.ctx = ctx
        self.writer: SQLiteWriter | None = None
        self._runner: SQLiteBatchRunner | None = None
        if ctx.kind == "sqlite":
            self._runner = SQLiteBatchRunner(ctx, sqlite or SQLiteSettings())
            self.writer = SQLiteWriter(self._runner.run, max_batch=max_batch, window=window)

    def start(self) -> None:
        """Start the SQLite writer (no-op on other engines)."""
        if self.writer is not None:
            self.writer.start()

    async def stop(self) -> None:
        """Finish queued writes and stop the SQLite writer."""
        if self.writer is not None:
            await self.writer.stop()
        if self._runner is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._runner.close)

    async def write(self, what: str, op: WriteOp[T], *, rows: int | None = None) -> T:
        """Run ``op`` in a write transaction and return its result once committed.

        Args:
            what: what is being done, for error messages ("creating a task").
            op: the operation.
            rows: how many rows ``op`` writes at most, when known (on SQLite a small
                write may then run without a hop to the writer thread; see
                :meth:`taskflow_sql.sqlite_sync.SQLiteBatchRunner.run`).
        """
        return (await self.write_many(what, [op], rows=rows))[0]

    async def write_many(
        self, what: str, ops: Sequence[WriteOp[T]], *, rows: int | None = None
    ) -> list[T]:
        """Run ``ops`` in order and return their results; ``rows`` as for :meth:`write`
        (kept for a single operation).

        On SQLite they are batched with other callers' writes; elsewhere they share one
        transaction.
        """
        try:
            if self.writer is not None:
                return cast("list[T]", await self.writer.submit_many(ops, rows))
            return cast("list[T]", await retried(lambda: run_transaction(self.ctx, ops)))
        except Exception as exc:
            raise wrap_error(what, exc) from exc

    async def single(self, what: str, op: SingleOp[T]) -> T:
        """Run a one-statement write on an autocommit connection; retried on deadlock.

        Not on SQLite, whose writes all go through the group-commit writer.
        """
        if self.writer is not None:
            raise RuntimeError("single-statement writes are not used on SQLite")
        try:

            async def autocommit() -> T:
                conn = await connect(self.ctx, write=False)
                try:
                    await conn.execution_options(isolation_level="AUTOCOMMIT")
                    return await op(conn)
                finally:
                    await release(conn)

            return await retried(autocommit)
        except Exception as exc:
            raise wrap_error(what, exc) from exc

    async def read(self, what: str, op: ReadOp[T]) -> T:
        """Run ``op`` in a read transaction (one consistent snapshot) and return its result."""
        try:
            conn = await connect(self.ctx, write=False)
            try:
                async with conn.begin():
                    return await op(conn)
            finally:
                await release(conn)
        except Exception as exc:
            raise wrap_error(what, exc) from exc
