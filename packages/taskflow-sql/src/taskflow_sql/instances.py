"""Instance heartbeats: ``beat``, ``heartbeats`` and ``forget_instance``.

One row per instance in ``<prefix>instances`` (``instance_id``, ``beat_at``): a beat is
one small upsert whatever the number of tasks the instance holds.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from fastapi_taskflow.clock import Clock

from .context import SQLContext, Tx
from .dialect import upsert_statement
from .executor import Executor
from .schema import check_id

__all__ = ["SQLInstances"]


class SQLInstances:
    """Heartbeat operations; mixed into :class:`taskflow_sql.SQLBackend`."""

    clock: Clock
    _ctx: SQLContext
    _exec: Executor

    async def beat(self, instance_id: str) -> None:
        """See :meth:`fastapi_taskflow.protocols.Backend.beat`.

        ``INSERT … ON CONFLICT (instance_id) DO UPDATE SET beat_at`` (``ON DUPLICATE
        KEY UPDATE`` on MySQL): one statement, its own transaction outside SQLite.

        Raises:
            ValueError: ``instance_id`` is longer than 255 characters.
        """
        check_id(instance_id, "instance ids")
        table = self._ctx.tables.instances
        stmt = upsert_statement(self._ctx.kind, table, ("instance_id",), ("beat_at",))

        def params() -> dict[str, object]:
            return {"instance_id": instance_id, "beat_at": self.clock.now()}

        if self._ctx.kind == "sqlite":

            async def op(tx: Tx) -> None:
                await tx.conn.execute(stmt, params())

            await self._exec.write("recording a heartbeat", op)
            return

        async def single(conn: AsyncConnection) -> None:
            await conn.execute(stmt, params())

        await self._exec.single("recording a heartbeat", single)

    async def heartbeats(self) -> dict[str, datetime]:
        """See :meth:`fastapi_taskflow.protocols.Backend.heartbeats`."""
        table = self._ctx.tables.instances
        stmt = select(table.c.instance_id, table.c.beat_at)

        async def op(conn: AsyncConnection) -> dict[str, datetime]:
            return {row.instance_id: row.beat_at for row in await conn.execute(stmt)}

        return await self._exec.read("reading heartbeats", op)

    async def forget_instance(self, instance_id: str) -> None:
        """See :meth:`fastapi_taskflow.protocols.Backend.forget_instance`."""
        table = self._ctx.tables.instances
        stmt = delete(table).where(table.c.instance_id == instance_id)
        if self._ctx.kind == "sqlite":

            async def op(tx: Tx) -> None:
                await tx.conn.execute(stmt)

            await self._exec.write("forgetting an instance", op)
            return

        async def single(conn: AsyncConnection) -> None:
            await conn.execute(stmt)

        await self._exec.single("forgetting an instance", single)
