"""Leases on tasks and named locks for periodic schedules: rows with an owner and expiry."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import Table, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from fastapi_taskflow.clock import Clock
from fastapi_taskflow.models import Lease

from .context import SQLContext, Tx
from .dialect import insert_if_absent
from .executor import Executor
from .queries import chunks
from .schema import ID_LENGTH
from .statements import take_upsert

__all__ = ["SQLLeases"]


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


class SQLLeases:
    """Lease and lock operations; mixed into :class:`taskflow_sql.SQLBackend`."""

    clock: Clock
    _ctx: SQLContext
    _exec: Executor

    async def acquire_lease(self, task_id: str, *, owner: str, lease_seconds: float) -> bool:
        """See :meth:`fastapi_taskflow.protocols.Backend.acquire_lease`."""

        async def op(tx: Tx) -> bool:
            now = self.clock.now()
            expires = now + timedelta(seconds=lease_seconds)
            return await _take(tx, tx.ctx.tables.leases, "task_id", task_id, owner, now, expires)

        if self._ctx.kind == "postgresql":

            async def single(conn: AsyncConnection) -> bool:
                now = self.clock.now()
                expires = now + timedelta(seconds=lease_seconds)
                leases = self._ctx.tables.leases
                return await _take_upsert(
                    conn, self._ctx, leases, "task_id", task_id, owner, now, expires
                )

            return await self._exec.single("acquiring a lease", single)
        return await self._exec.write("acquiring a lease", op)

    async def renew_leases(
        self, task_ids: Collection[str], *, owner: str, lease_seconds: float
    ) -> set[str]:
        """See :meth:`fastapi_taskflow.protocols.Backend.renew_leases`."""
        ids = sorted(set(task_ids))
        if not ids:
            return set()

        async def op(tx: Tx) -> set[str]:
            leases = tx.ctx.tables.leases
            expires = self.clock.now() + timedelta(seconds=lease_seconds)
            renewed: set[str] = set()
            for part in chunks(ids):
                await tx.conn.execute(
                    update(leases)
                    .where(leases.c.owner == owner, leases.c.task_id.in_(part))
                    .values(expires_at=expires)
                )
                held = await tx.conn.execute(
                    select(leases.c.task_id).where(
                        leases.c.owner == owner, leases.c.task_id.in_(part)
                    )
                )
                renewed.update(held.scalars())
            return renewed

        return await self._exec.write("renewing leases", op)

    async def release_lease(self, task_id: str, *, owner: str) -> bool:
        """See :meth:`fastapi_taskflow.protocols.Backend.release_lease`."""

        async def op(tx: Tx) -> bool:
            leases = tx.ctx.tables.leases
            result = await tx.conn.execute(
                delete(leases).where(leases.c.task_id == task_id, leases.c.owner == owner)
            )
            return bool(result.rowcount)

        if self._ctx.kind != "sqlite":  # one DELETE: its own transaction

            async def single(conn: AsyncConnection) -> bool:
                leases = self._ctx.tables.leases
                result = await conn.execute(
                    delete(leases).where(leases.c.task_id == task_id, leases.c.owner == owner)
                )
                return bool(result.rowcount)

            return await self._exec.single("releasing a lease", single)
        return await self._exec.write("releasing a lease", op)

    async def expired_leases(self, *, limit: int = 100) -> list[Lease]:
        """See :meth:`fastapi_taskflow.protocols.Backend.expired_leases`."""
        leases = self._ctx.tables.leases
        now = self.clock.now()

        async def op(conn: AsyncConnection) -> list[Lease]:
            rows = await conn.execute(
                select(leases.c.task_id, leases.c.owner, leases.c.expires_at)
                .where(leases.c.expires_at <= now)
                .order_by(leases.c.expires_at, leases.c.task_id)
                .limit(limit)
            )
            return [
                Lease(task_id=row.task_id, owner=row.owner, expires_at=row.expires_at)
                for row in rows
            ]

        return await self._exec.read("listing expired leases", op)

    async def acquire_lock(self, name: str, *, owner: str, ttl_seconds: float) -> bool:
        """See :meth:`fastapi_taskflow.protocols.Backend.acquire_lock`.

        Raises:
            ValueError: ``name`` is longer than 255 characters.
        """
        if len(name) > ID_LENGTH:
            raise ValueError(f"lock names are at most {ID_LENGTH} characters: {name[:40]!r}…")

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
