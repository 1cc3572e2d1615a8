"""Named locks for periodic schedules: rows with an owner and an expiry."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Table, delete, or_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from fastapi_taskflow.clock import Clock

from .context import SQLContext, Tx
from .dialect import insert_if_absent
from .executor import Executor
from .schema import check_id
from .statements import take_upsert

__all__ = ["SQLLocks"]


async def _take(
    tx: Tx, table: Table, key: str, name: str, owner: str, now: datetime, expires: datetime
) -> bool:
    """Take or extend the row ``name`` for ``owner`` unless another owner's is live.

    PostgreSQL and SQLite: one ``INSERT … ON CONFLICT DO UPDATE … WHERE`` (see
    :func:`taskflow_sql.statements.take_upsert`). MySQL: first ``UPDATE … WHERE key =
    :name AND (owner = :owner OR expires_at <= :now)`` (the database re-checks the
    condition under the row lock, so of two racers for an expired row one wins), then,
    when no row matched, an insert-if-absent.
    """
    if tx.ctx.kind != "mysql":
        return await _take_upsert(tx.conn, tx.ctx, table, key, name, owner, now, expires)
    result = await tx.conn.execute(
        update(table)
        .where(
            table.c[key] == name,
            or_(table.c.owner == owner, table.c.expires_at <= now),
        )
        .values(owner=owner, expires_at=expires)
    )
    if result.rowcount:
        return True
    return await insert_if_absent(tx, table, {key: name, "owner": owner, "expires_at": expires})


async def _take_upsert(
    conn: AsyncConnection,
    ctx: SQLContext,
    table: Table,
    key: str,
    name: str,
    owner: str,
    now: datetime,
    expires: datetime,
) -> bool:
    stmt = take_upsert(ctx.kind, table, key)
    params = {"p_name": name, "p_owner": owner, "p_now": now, "p_expires": expires}
    return (await conn.execute(stmt, params)).first() is not None


class SQLLocks:
    """Lock operations; mixed into :class:`taskflow_sql.SQLBackend`."""

    clock: Clock
    _ctx: SQLContext
    _exec: Executor

    async def acquire_lock(self, name: str, *, owner: str, ttl_seconds: float) -> bool:
        """See :meth:`fastapi_taskflow.protocols.Backend.acquire_lock`.

        Raises:
            ValueError: ``name`` is longer than 255 characters.
        """
        check_id(name, "lock names")

        async def op(tx: Tx) -> bool:
            now = self.clock.now()
            expires = now + timedelta(seconds=ttl_seconds)
            return await _take(tx, tx.ctx.tables.locks, "name", name, owner, now, expires)

        return await self._exec.write("acquiring a lock", op)

    async def release_lock(self, name: str, *, owner: str) -> bool:
        """See :meth:`fastapi_taskflow.protocols.Backend.release_lock`."""

        async def op(tx: Tx) -> bool:
            locks = tx.ctx.tables.locks
            result = await tx.conn.execute(
                delete(locks).where(locks.c.name == name, locks.c.owner == owner)
            )
            return bool(result.rowcount)

        return await self._exec.write("releasing a lock", op)
