"""The admin side of the Store: the task list, stats and retention."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from fastapi_taskflow.models import (
    TERMINAL_STATUSES,
    TaskPage,
    TaskQuery,
    TaskStats,
    TaskStatus,
    decode_cursor,
    encode_cursor,
)

from .context import SQLContext, Tx
from .dialect import locked
from .executor import Executor
from .rows import record_columns, row_to_record, tag_token

__all__ = ["SQLQueries", "chunks"]

_TERMINAL = sorted(status.value for status in TERMINAL_STATUSES)
_CHUNK = 500


def chunks(items: Sequence[Any], size: int = _CHUNK) -> list[Sequence[Any]]:
    """Split ``items`` for ``IN (…)`` lists that stay under every engine's limit."""
    return [items[i : i + size] for i in range(0, len(items), size)]


class SQLQueries:
    """Task list, stats and purge; mixed into :class:`taskflow_sql.SQLBackend`."""

    _ctx: SQLContext
    _exec: Executor

    async def query(self, query: TaskQuery) -> TaskPage:
        """See :meth:`fastapi_taskflow.protocols.Store.query`.

        Newest first by ``(created_at, task_id)``; each filter has an index whose
        trailing columns are ``(created_at, task_id)``, so a page costs an index range
        scan of ``limit`` rows. Tags are matched through ``task_tags``.
        """
        after = decode_cursor(query.cursor) if query.cursor else None
        tables = self._ctx.tables
        tasks = tables.tasks
        where: list[Any] = []
        if query.statuses:
            where.append(tasks.c.status.in_(sorted({TaskStatus(s).value for s in query.statuses})))
        if query.func_name is not None:
            where.append(tasks.c.func_name == query.func_name)
        if query.queue is not None:
            where.append(tasks.c.queue == query.queue)
        if query.created_after is not None:
            where.append(tasks.c.created_at >= query.created_after)
        if query.created_before is not None:
            where.append(tasks.c.created_at < query.created_before)
        for key, value in (query.tags or {}).items():
            tags = tables.tags
            where.append(
                exists().where(
                    tags.c.task_id == tasks.c.task_id,
                    tags.c.key == tag_token(key),
                    tags.c.value == tag_token(value),
                )
            )
        if after is not None:
            created, task_id = after
            where.append(tasks.c.created_at <= created)
            where.append(
                or_(
                    tasks.c.created_at < created,
                    and_(tasks.c.created_at == created, tasks.c.task_id < task_id),
                )
            )
        stmt = (
            select(*record_columns(tables))
            .where(*where)
            .order_by(tasks.c.created_at.desc(), tasks.c.task_id.desc())
            .limit(query.limit + 1)
        )

        async def op(conn: AsyncConnection) -> TaskPage:
            rows = (await conn.execute(stmt)).all()
            more = len(rows) > query.limit
            items = [row_to_record(row._mapping) for row in rows[: query.limit]]
            next_cursor = None
            if more:
                last = rows[query.limit - 1]
                next_cursor = encode_cursor(last.created_at, last.task_id)
            found = [item for item in items if item is not None]
            return TaskPage(items=found, next_cursor=next_cursor)

        return await self._exec.read("listing tasks", op)

    async def stats(self) -> TaskStats:
        """See :meth:`fastapi_taskflow.protocols.Store.stats`.

        Reads the ``counters`` table (a few rows per function), which every create,
        transition and purge keeps exact in its own transaction.
        """
        counters = self._ctx.tables.counters
        stmt = select(counters.c.func_name, counters.c.status, func.sum(counters.c.n)).group_by(
            counters.c.func_name, counters.c.status
        )

        async def op(conn: AsyncConnection) -> TaskStats:
            by_status: dict[TaskStatus, int] = {}
            by_func: dict[str, dict[TaskStatus, int]] = {}
            for func_name, status, total in await conn.execute(stmt):
                count = int(total or 0)
                if not count:
                    continue
                status = TaskStatus(status)
                by_status[status] = by_status.get(status, 0) + count
                by_func.setdefault(func_name, {})[status] = count
            return TaskStats(total=sum(by_status.values()), by_status=by_status, by_func=by_func)

        return await self._exec.read("computing task stats", op)

    async def purge(self, *, finished_before: datetime, batch_size: int = 1000) -> int:
        """See :meth:`fastapi_taskflow.protocols.Store.purge`.

        One short transaction per call: picks up to ``batch_size`` finished tasks by the
        ``finished_at`` index (``SKIP LOCKED`` where available, so concurrent purgers
        split the work), deletes them with their tags and logs, and adjusts the counters.
        """
        if batch_size < 1:
            return 0

        async def op(tx: Tx) -> int:
            tables = tx.ctx.tables
            tasks = tables.tasks
            pick = (
                select(tasks.c.task_id, tasks.c.func_name, tasks.c.status)
                .where(tasks.c.finished_at < finished_before, tasks.c.status.in_(_TERMINAL))
                .order_by(tasks.c.finished_at)
                .limit(batch_size)
            )
            rows = (await tx.conn.execute(locked(pick, tx, skip_locked=True))).all()
            if not rows:
                return 0
            ids = [row.task_id for row in rows]
            for part in chunks(ids):
                await tx.conn.execute(delete(tables.logs).where(tables.logs.c.task_id.in_(part)))
                await tx.conn.execute(delete(tables.tags).where(tables.tags.c.task_id.in_(part)))
                await tx.conn.execute(delete(tasks).where(tasks.c.task_id.in_(part)))
            for row in rows:
                tx.count(row.func_name, row.task_id, row.status, -1)
            return len(rows)

        return await self._exec.write("purging finished tasks", op)
