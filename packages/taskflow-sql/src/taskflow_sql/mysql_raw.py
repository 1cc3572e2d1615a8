"""MySQL/MariaDB's hot statements sent straight to the driver inside the transaction.

The grouped transitions and ``create_many`` send statements with hundreds of values
(the rows of a batch). Through SQLAlchemy each costs an execution context, the
processing of every parameter and row and the adapter's hop into its greenlet: more
client CPU than the server spends on them. Here the statement (compiled once from
SQLAlchemy Core) goes to the driver connection under the same
SQLAlchemy transaction, with values bound and read by the columns' own SQLAlchemy
processors, so what is written and read equals the generic path. Statements are
compiled with the engine's own dialect (``format`` paramstyle, and the server's version,
which decides how ``ON DUPLICATE KEY UPDATE`` is written). The transaction is
still begun, committed or rolled back by SQLAlchemy; a driver error is classified by
:mod:`taskflow_sql.errors` like a wrapped one.

Only the asyncmy and aiomysql drivers (whose cursors are ``async``) take this path.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from .context import Tx

__all__ = ["MySQLDriver", "driver_for"]

Processor = Callable[[Any], Any] | None

_DRIVERS = ("asyncmy", "aiomysql")


class MySQLDriver:
    """The driver connection of a transaction, and the dialect's value processors.

    A statement cancelled half way (a shutdown, a timeout) leaves the driver connection
    unusable: asyncmy fails every later call on it with "Cancelled during execution".
    The rollback SQLAlchemy runs as the cancellation leaves the transaction failed that
    way, and its error replaced the ``CancelledError`` (coming out as
    ``BackendUnavailableError``, as if the store were down). SQLAlchemy invalidates a
    connection whose statement it sees cancelled; a statement sent here bypasses it, so
    the connection is invalidated here, and the cancellation goes on.
    """

    def __init__(self, connection: Any, dialect: Dialect, owner: AsyncConnection) -> None:
        self.connection = connection
        self.dialect = dialect
        self._owner = owner

    async def fetch(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run one statement; its rows (none for DML)."""
        async with self._cursor() as cursor:
            await cursor.execute(sql, args)
            return list(await cursor.fetchall() or ())

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run an ``INSERT … VALUES`` for ``rows``: the driver sends one multi-row INSERT."""
        async with self._cursor() as cursor:
            await cursor.executemany(sql, rows)

    @contextlib.asynccontextmanager
    async def _cursor(self) -> AsyncIterator[Any]:
        """A cursor for one statement, closed after it; a statement cancelled half way
        discards the connection instead (see the class)."""
        cursor = self.connection.cursor()
        discarded = False
        try:
            yield cursor
        except asyncio.CancelledError:
            discarded = True
            with contextlib.suppress(Exception):
                await self._owner.invalidate()  # the rollback then sends nothing
            raise
        finally:
            if not discarded:
                await _close(cursor)

    def binds(self, table: Table, names: Sequence[str]) -> tuple[Processor, ...]:
        """The bind processors of ``table``'s columns ``names``."""
        return _binds(table, tuple(names), self.dialect)

    def reads(self, columns: Sequence[Any]) -> tuple[Processor, ...]:
        """The result processors of ``columns``."""
        return _reads(tuple(columns), self.dialect)


async def _close(cursor: Any) -> None:
    result = cursor.close()
    if hasattr(result, "__await__"):
        await result


async def driver_for(tx: Tx) -> MySQLDriver | None:
    """The driver connection under ``tx`` on MySQL with an async driver, else None."""
    if tx.ctx.kind != "mysql":
        return None
    dialect = tx.ctx.engine.dialect
    if dialect.driver not in _DRIVERS or dialect.paramstyle != "format":
        return None
    fairy = await tx.conn.get_raw_connection()
    return MySQLDriver(fairy.driver_connection, dialect, tx.conn)


def bound(values: Sequence[Any], processors: Sequence[Processor]) -> list[Any]:
    """``values`` through their bind processors."""
    return [
        value if process is None or value is None else process(value)
        for value, process in zip(values, processors, strict=True)
    ]


def read(
    row: Sequence[Any], names: Sequence[str], processors: Sequence[Processor]
) -> dict[str, Any]:
    """A driver row as a mapping of processed values."""
    return {
        name: (value if process is None or value is None else process(value))
        for name, process, value in zip(names, processors, row, strict=True)
    }


@lru_cache(maxsize=256)
def _binds(table: Table, names: tuple[str, ...], dialect: Dialect) -> tuple[Processor, ...]:
    return tuple(table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names)


@lru_cache(maxsize=64)
def _reads(columns: tuple[Any, ...], dialect: Dialect) -> tuple[Processor, ...]:
    found: list[Processor] = []
    for column in columns:
        try:
            process = column.type.dialect_impl(dialect).result_processor(dialect, None)
        except TypeError:  # needs the driver's column type: keep the driver's value
            process = None
        found.append(process)
    return tuple(found)
