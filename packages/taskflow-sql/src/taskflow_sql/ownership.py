"""Who holds the active tasks: owners(), owned(owner), adopt(), and group transitions.

``tasks.active_owner`` is the owner while a task is PENDING or RUNNING and NULL after
(every write that changes the status or the owner keeps it so), under the index
``(active_owner, created_at, task_id)``. Finished tasks are thus never read here, however
many the table holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Table, bindparam, literal_column, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.selectable import TextualSelect

from fastapi_taskflow.clock import Clock
from fastapi_taskflow.models import TaskRecord, Transition

from .context import SQLContext, Tx
from .executor import Executor
from .grouped import Moved, pg_transitions, run_transitions
from .oversized import sized, transition_texts
from .pg_writes import PostgresWrites
from .rows import record_columns, row_to_record

__all__ = ["SQLOwnership"]


@lru_cache(maxsize=64)
def _owners_skip_scan(tasks: Table, kind: str) -> TextualSelect:
    """Distinct owners by a loose index scan: one index probe per owner.

    ``WITH RECURSIVE o AS (SELECT min(active_owner) … UNION ALL SELECT (SELECT
    min(active_owner) … WHERE active_owner > o.owner) FROM o …)``: PostgreSQL and SQLite
    have no skip scan for DISTINCT, and a plain one would read every active task.
    """
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = postgresql.dialect() if kind == "postgresql" else sqlite.dialect()  # type: ignore[no-untyped-call]
    q = dialect.identifier_preparer
    table = q.format_table(tasks)
    col = q.quote("active_owner")
    sql = (
        f"WITH RECURSIVE o(owner) AS ("
        f"SELECT min({col}) FROM {table} WHERE {col} IS NOT NULL "
        f"UNION ALL SELECT (SELECT min({col}) FROM {table} WHERE {col} > o.owner) "
        f"FROM o WHERE o.owner IS NOT NULL) "
        f"SELECT owner FROM o WHERE owner IS NOT NULL"
    )
    return text(sql).columns(literal_column("owner"))


class SQLOwnership:
    """owners/owned/adopt and transition_many; mixed into :class:`taskflow_sql.SQLBackend`."""

    clock: Clock
    _ctx: SQLContext
    _exec: Executor
    _pg_write: PostgresWrites | None = None

    async def transition_many(self, transitions: Sequence[Transition]) -> list[Moved]:
        """See :meth:`fastapi_taskflow.protocols.Store.transition_many`.

        One transaction, one statement per shape of item (see
        :mod:`taskflow_sql.grouped`); on PostgreSQL the whole call, counters included, is
        one statement (one round trip; with asyncpg its rows are bound as arrays, see
        :mod:`taskflow_sql.pg_writes`). On SQLite it is one operation of the
        group-commit writer.
        """
        if not transitions:
            return []
        items = list(transitions)

        async def op(tx: Tx) -> list[Moved]:
            return await run_transitions(tx, items, self.clock.now())

        if self._pg_write is not None:
            return await self._pg_write.transition_many(items, self.clock.now())
        if self._ctx.kind == "postgresql":
            ctx = self._ctx

            async def single(conn: AsyncConnection) -> list[Moved]:
                now = self.clock.now()
                return await pg_transitions(conn, ctx.tables, ctx.counter_slots, items, now)

            return await self._exec.single("changing tasks' status", single)
        write = self._exec.write("changing tasks' status", op, rows=len(items))
        return await sized(self._ctx, write, lambda: transition_texts(items))

    async def owners(self) -> set[str]:
        """See :meth:`fastapi_taskflow.protocols.Store.owners`.

        A loose index scan of ``active_owner`` (PostgreSQL, SQLite: a recursive query
        probing the index once per owner; MySQL/MariaDB: ``DISTINCT``, which the server
        already runs as a loose scan of the index).
        """
        tasks = self._ctx.tables.tasks
        if self._ctx.kind == "mysql":
            stmt: Any = (
                select(tasks.c.active_owner).where(tasks.c.active_owner.is_not(None)).distinct()
            )
        else:
            stmt = _owners_skip_scan(tasks, self._ctx.kind)

        async def op(conn: AsyncConnection) -> set[str]:
            return {str(owner) for owner in (await conn.execute(stmt)).scalars()}

        return await self._exec.read("listing task owners", op)

    async def owned(self, owner: str, *, limit: int = 100) -> list[str]:
        """See :meth:`fastapi_taskflow.protocols.Store.owned` (one index range scan)."""
        if limit < 1:
            return []
        tables = self._ctx.tables
        tasks = tables.tasks
        stmt = (
            select(tasks.c.task_id)
            .where(tasks.c.active_owner == bindparam("p_owner"))
            .order_by(tasks.c.created_at, tasks.c.task_id)
            .limit(bindparam("p_limit", type_=tasks.c.attempt.type))
        )

        async def op(conn: AsyncConnection) -> list[str]:
            rows = await conn.execute(stmt, {"p_owner": owner, "p_limit": limit})
            return [row[0] for row in rows]

        return await self._exec.read("listing an owner's tasks", op)

    async def adopt(self, task_id: str, *, owner: str, new_owner: str | None) -> TaskRecord | None:
        """See :meth:`fastapi_taskflow.protocols.Store.adopt`.

        ``UPDATE tasks SET owner = :new, active_owner = :new WHERE task_id = :id AND
        active_owner = :owner``: ``active_owner`` equals the owner exactly while the task
        is active, so this one condition is the whole compare-and-set.
        """
        tables = self._ctx.tables
        tasks = tables.tasks
        columns = record_columns(tables)
        change = (
            update(tasks)
            .where(tasks.c.task_id == task_id, tasks.c.active_owner == owner)
            .values(owner=new_owner, active_owner=new_owner)
        )
        returning = self._ctx.update_returning

        async def run(conn: Any) -> TaskRecord | None:
            if returning:
                row = (await conn.execute(change.returning(*columns))).first()
            else:
                result = await conn.execute(change)
                if not result.rowcount:
                    return None
                row = (
                    await conn.execute(select(*columns).where(tasks.c.task_id == task_id))
                ).first()
            return None if row is None else row_to_record(row._mapping)

        async def op(tx: Tx) -> TaskRecord | None:
            return await run(tx.conn)

        if self._ctx.kind == "postgresql":
            return await self._exec.single("adopting a task", run)
        return await self._exec.write("adopting a task", op)
