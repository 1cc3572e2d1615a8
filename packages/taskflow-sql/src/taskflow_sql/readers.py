"""Readers of the event fan-out: ``announce_reader``, ``withdraw_reader`` and ``readers``.

One row per reader in ``<prefix>readers`` (``reader_id``, ``expires_at``). Instances
read the table about twice a second and publish their tasks' events only while it holds
a live row (see :mod:`fastapi_taskflow.fanout`); an announcement is one small transaction,
which also deletes the rows that expired (a reader that died without withdrawing).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from fastapi_taskflow.clock import Clock

from .context import SQLContext, Tx
from .dialect import upsert_statement
from .executor import Executor
from .schema import check_id

__all__ = ["SQLReaders"]


class SQLReaders:
    """Reader announcements; mixed into :class:`taskflow_sql.SQLBackend`."""

    clock: Clock
    _ctx: SQLContext
    _exec: Executor

    async def announce_reader(self, reader_id: str, *, ttl_seconds: float) -> None:
        """See :meth:`fastapi_taskflow.protocols.Backend.announce_reader`.

        Raises:
            ValueError: ``reader_id`` is longer than 255 characters.
        """
        check_id(reader_id, "reader ids")
        table = self._ctx.tables.readers
        upsert = upsert_statement(self._ctx.kind, table, ("reader_id",), ("expires_at",))

        async def op(tx: Tx) -> None:
            now = self.clock.now()
            await tx.conn.execute(delete(table).where(table.c.expires_at <= now))
            expires = now + timedelta(seconds=ttl_seconds)
            await tx.conn.execute(upsert, {"reader_id": reader_id, "expires_at": expires})

        await self._exec.write("announcing a reader of events", op)

    async def withdraw_reader(self, reader_id: str) -> None:
        """See :meth:`fastapi_taskflow.protocols.Backend.withdraw_reader`."""
        table = self._ctx.tables.readers
        stmt = delete(table).where(table.c.reader_id == reader_id)

        async def op(tx: Tx) -> None:
            await tx.conn.execute(stmt)

        await self._exec.write("withdrawing a reader of events", op)

    async def readers(self) -> set[str]:
        """See :meth:`fastapi_taskflow.protocols.Backend.readers`."""
        table = self._ctx.tables.readers

        async def op(conn: AsyncConnection) -> set[str]:
            stmt = select(table.c.reader_id).where(table.c.expires_at > self.clock.now())
            return {row.reader_id for row in await conn.execute(stmt)}

        return await self._exec.read("reading the readers of events", op)
