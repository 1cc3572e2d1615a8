"""Queues and one-off schedules: enqueue, claim, dequeue, schedule_once."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from fastapi_taskflow.clock import Clock
from fastapi_taskflow.models import Claim

from .context import SQLContext, Tx
from .dialect import insert_if_absent, locked, upsert
from .executor import Executor
from .queries import chunks
from .rows import key_hash
from .statements import PENDING, enqueue_statement, pg_claim

__all__ = ["SQLQueue", "enqueue_in"]


async def enqueue_in(tx: Tx, task_id: str, queue: str, priority: int, due_at: datetime) -> None:
    """Put ``task_id`` on ``queue`` inside ``tx``, replacing an earlier entry.

    A re-enqueued task takes a new place in enqueue order (a new ``id``), as it would in
    a fresh queue. SQLite: one ``INSERT OR REPLACE`` (which deletes the old entry and
    inserts a new one); PostgreSQL: one upsert that also draws a new ``id`` from the
    table's sequence; MySQL: the old entry is deleted and a new one inserted (the
    upsert only matters when two transactions enqueue the same task at once).
    """
    table = tx.ctx.tables.queue
    row = {"queue": queue, "task_id": task_id, "neg_priority": -priority, "due_at": due_at}
    kind = tx.ctx.kind
    if kind != "mysql":
        await tx.conn.execute(enqueue_statement(kind, table), row)
        return
    await tx.conn.execute(delete(table).where(table.c.queue == queue, table.c.task_id == task_id))
    await upsert(tx, table, [row], keys=("queue", "task_id"), replace=("neg_priority", "due_at"))


class SQLQueue:
    """Queue operations; mixed into :class:`taskflow_sql.SQLBackend`."""

    clock: Clock
    _ctx: SQLContext
    _exec: Executor

    async def enqueue(
        self,
        task_id: str,
        *,
        queue: str,
        priority: int = 0,
        not_before: datetime | None = None,
    ) -> None:
        """See :meth:`fastapi_taskflow.protocols.Backend.enqueue`."""

        async def op(tx: Tx) -> None:
            await enqueue_in(tx, task_id, queue, priority, not_before or self.clock.now())

        if self._ctx.kind == "postgresql":  # one statement: its own transaction
            stmt = enqueue_statement("postgresql", self._ctx.tables.queue)

            async def single(conn: AsyncConnection) -> None:
                due = not_before or self.clock.now()
                row = {"queue": queue, "task_id": task_id, "neg_priority": -priority}
                row["due_at"] = due
                await conn.execute(stmt, row)

            await self._exec.single("enqueuing a task", single)
            return
        await self._exec.write("enqueuing a task", op)

    async def claim(self, *, queue: str, owner: str, limit: int = 1) -> list[Claim]:
        """See :meth:`fastapi_taskflow.protocols.Backend.claim`.

        ``SELECT … ORDER BY neg_priority, due_at, id LIMIT n FOR UPDATE SKIP LOCKED`` on
        PostgreSQL and MySQL/MariaDB, so concurrent claimers take different rows without
        waiting; on SQLite the same SELECT runs inside ``BEGIN IMMEDIATE`` (one writer).
        The claimed rows are deleted, and their PENDING task records handed to ``owner``
        (``owner`` and ``active_owner``; status and ``updated_at`` unchanged; a RUNNING
        record stays its runner's), in the same transaction. On PostgreSQL the three
        steps are one statement (:func:`taskflow_sql.statements.pg_claim`): one round
        trip per claim.
        """
        if limit < 1:
            return []

        async def op(tx: Tx) -> list[Claim]:
            now = self.clock.now()
            tables = tx.ctx.tables
            q = tables.queue
            pick = (
                select(q.c.id, q.c.task_id, q.c.neg_priority)
                .where(q.c.queue == queue, q.c.due_at <= now)
                .order_by(q.c.neg_priority, q.c.due_at, q.c.id)
                .limit(limit)
            )
            rows = (await tx.conn.execute(locked(pick, tx, skip_locked=True))).all()
            if not rows:
                return []
            for part in chunks([row.id for row in rows]):
                await tx.conn.execute(delete(q).where(q.c.id.in_(part)))
            tasks = tables.tasks
            for part in chunks(sorted({row.task_id for row in rows})):
                await tx.conn.execute(
                    update(tasks)
                    .where(tasks.c.task_id.in_(part), tasks.c.status == PENDING)
                    .values(owner=owner, active_owner=owner)
                )
            return [
                Claim(task_id=row.task_id, queue=queue, priority=-row.neg_priority) for row in rows
            ]

        if self._ctx.kind == "postgresql":
            stmt = pg_claim(self._ctx.tables.queue, self._ctx.tables.tasks)

            async def single(conn: AsyncConnection) -> list[Claim]:
                params = {"p_queue": queue, "p_now": self.clock.now(), "p_limit": limit}
                params["p_owner"] = owner
                rows = await conn.execute(stmt, params)
                return [
                    Claim(task_id=row.task_id, queue=queue, priority=-row.neg_priority)
                    for row in rows
                ]

            return await self._exec.single("claiming tasks", single)
        return await self._exec.write("claiming tasks", op)

    async def dequeue(self, task_id: str, *, queue: str) -> bool:
        """See :meth:`fastapi_taskflow.protocols.Backend.dequeue`."""

        async def op(tx: Tx) -> bool:
            q = tx.ctx.tables.queue
            result = await tx.conn.execute(
                delete(q).where(q.c.queue == queue, q.c.task_id == task_id)
            )
            return bool(result.rowcount)

        return await self._exec.write("dequeuing a task", op)

    async def queue_length(self, queue: str) -> int:
        """See :meth:`fastapi_taskflow.protocols.Backend.queue_length`."""
        q = self._ctx.tables.queue

        async def op(conn: AsyncConnection) -> int:
            count = await conn.scalar(select(func.count()).where(q.c.queue == queue))
            return int(count or 0)

        return await self._exec.read("counting a queue", op)

    async def schedule_once(
        self,
        run_key: str,
        *,
        task_id: str,
        queue: str,
        run_at: datetime,
        priority: int = 0,
    ) -> bool:
        """See :meth:`fastapi_taskflow.protocols.Backend.schedule_once`.

        The run key's hash is the primary key of ``run_keys``: the first insert wins,
        and the enqueue happens in the same transaction.
        """

        async def op(tx: Tx) -> bool:
            row = {
                "key_hash": key_hash(run_key),
                "run_key": run_key,
                "task_id": task_id,
                "created_at": self.clock.now(),
            }
            if not await insert_if_absent(tx, tx.ctx.tables.run_keys, row):
                return False
            await enqueue_in(tx, task_id, queue, priority, run_at)
            return True

        return await self._exec.write("scheduling a one-off run", op)
