"""PostgreSQL's hot writes on the asyncpg driver: one prepared statement, rows as arrays.

``create_many`` and ``transition_many`` carry the records of a request flush and the
starts and finishes of every running task, so on PostgreSQL each is one statement,
its own transaction (autocommit: durable once it returns), and one round trip. Through
SQLAlchemy each call would also pay a pool checkout, a compiled-cache lookup and the
binding of one parameter per cell (1,500 for 64 records); here:

* each column travels as one array parameter (``unnest($1::varchar(64)[], …)``), so a
  statement has a few dozen parameters whatever the number of rows, and asyncpg
  prepares it once per shape of batch and encodes the arrays in C;
* the statement goes straight to the asyncpg connection of the pooled connection the
  backend keeps checked out for its fast paths (:class:`~taskflow_sql.pg_kept.KeptConnection`,
  shared with ``get``); a call that finds it busy takes another from the pool.

Values are bound and read with the columns' own SQLAlchemy processors, so rows written
and records read here equal the generic path's. Only the asyncpg driver takes this path
(see :meth:`taskflow_sql.SQLBackend.open`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Dialect

from fastapi_taskflow.models import CreateResult, TaskRecord, Transition

from .context import SQLContext
from .errors import retried, wrap_error
from .grouped import Shape, _groups, _parts, pg_commit_sql, pg_counted
from .pg_kept import KeptConnection
from .rows import fast_record, normalized, record_columns, record_values

__all__ = ["PostgresWrites"]

_CREATE_CHUNK = 1000


class PostgresWrites:
    """``create_many`` and ``transition_many`` as single array-bound statements.

    Args:
        ctx: the backend's context (its engine's dialect binds and reads the values).
        kept: the connection kept for the fast paths.
    """

    def __init__(self, ctx: SQLContext, kept: KeptConnection) -> None:
        self._ctx = ctx
        self._kept = kept
        dialect = ctx.engine.dialect
        tasks = ctx.tables.tasks
        self._columns = tuple(record_columns(ctx.tables))
        self._binds = {column.name: _bind(column, dialect) for column in tasks.c}
        self._reads = tuple((column.name, _read(column, dialect)) for column in self._columns)

    async def _fetch(self, what: str, sql: str, args: Sequence[Any]) -> list[Any]:
        """Run one statement, retried on deadlock or serialization failure."""
        try:

            async def fetch() -> list[Any]:
                async with self._kept.driver() as driver:
                    return list(await driver.fetch(sql, *args))

            return await retried(fetch)
        except Exception as exc:
            raise wrap_error(what, exc) from exc

    def _array(self, name: str, values: Sequence[Any]) -> list[Any]:
        process = self._binds[name]
        if process is None:
            return list(values)
        return [None if value is None else process(value) for value in values]

    def _record(self, row: Any) -> TaskRecord | None:
        values = {
            name: (value if process is None or value is None else process(value))
            for (name, process), value in zip(self._reads, row.values(), strict=True)
        }
        return fast_record(values)

    async def create_new(self, records: Sequence[TaskRecord]) -> list[CreateResult | None]:
        """Insert and count ``records`` (distinct ids and keys): one statement per 1,000.

        Returns a result for each record inserted, None for one whose id or active
        idempotency key was taken (the caller then creates it the usual way).
        """
        tables = self._ctx.tables
        sql = _create_sql(tables.tasks, tables.counters)
        names = [column.name for column in tables.tasks.c]
        slots = self._ctx.counter_slots
        results: list[CreateResult | None] = []
        for start in range(0, len(records), _CREATE_CHUNK):
            chunk = records[start : start + _CREATE_CHUNK]
            rows = [record_values(record) for record in chunk]
            args: list[Any] = [self._array(name, [row[name] for row in rows]) for name in names]
            args.append(zlib.crc32(chunk[0].task_id.encode()) % slots)
            inserted = {row[0] for row in await self._fetch("creating tasks", sql, args)}
            results += [
                CreateResult(record=normalized(record), created=True)
                if record.task_id in inserted
                else None
                for record in chunk
            ]
        return results

    async def transition_many(self, transitions: Sequence[Transition], now: Any) -> list[Any]:
        """Every item and the counters in one statement (see :func:`_transition_sql`)."""
        results: list[TaskRecord | None] = [None] * len(transitions)
        groups = _groups(transitions)
        if not groups:
            return results
        parts = _parts(groups)
        tables = self._ctx.tables
        sql = _transition_sql(
            tables.tasks, tables.counters, self._columns, tuple(shape for shape, _ in parts)
        )
        first = min(str(values["task_id"]) for _, items in parts for _, values in items)
        args: list[Any] = [
            self._binds["updated_at"](now) if self._binds["updated_at"] else now,
            zlib.crc32(first.encode()) % self._ctx.counter_slots,
        ]
        where: dict[str, int] = {}
        for shape, items in parts:
            for name in ("task_id", *shape.fields):
                args.append(self._array(name, [values.get(name) for _, values in items]))
            where.update((values["task_id"], index) for index, values in items)
        for row in await self._fetch("changing tasks' status", sql, args):
            results[where[row[0]]] = self._record(row)
        return results


def _bind(column: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    return column.type.dialect_impl(dialect).bind_processor(dialect)  # type: ignore[no-any-return]


def _read(column: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    """The column's result processor (None: asyncpg's value is kept, as for numerics,
    whose processor would need the driver's column type)."""
    try:
        return column.type.dialect_impl(dialect).result_processor(dialect, None)  # type: ignore[no-any-return]
    except TypeError:
        return None


def _pg_dialect() -> Dialect:
    from sqlalchemy.dialects import postgresql

    dialect: Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    return dialect


def _unnest(tasks: Table, names: Sequence[str], first: int) -> str:
    """``unnest($first::<type>[], …)``: one typed array parameter per column."""
    dialect = _pg_dialect()
    arrays = (
        f"${first + i}::{tasks.c[name].type.compile(dialect=dialect)}[]"
        for i, name in enumerate(names)
    )
    return f"unnest({', '.join(arrays)})"


@lru_cache(maxsize=16)
def _create_sql(tasks: Table, counters: Table) -> str:
    """Insert rows given as one array per column, skip conflicts, count what went in.

    ``WITH i AS (INSERT INTO tasks (…) SELECT * FROM unnest(…) ON CONFLICT DO NOTHING
    RETURNING task_id, func_name, status), c AS (<counters += the rows of i>) SELECT
    task_id FROM i``; ``$<columns + 1>`` is the counter slot.
    """
    q = _pg_dialect().identifier_preparer
    names = [column.name for column in tasks.c]
    header = ", ".join(q.quote(name) for name in names)
    rows = "SELECT func_name, status, 1 AS n FROM i"
    return (
        f"WITH i AS (INSERT INTO {q.format_table(tasks)} ({header}) "
        f"SELECT * FROM {_unnest(tasks, names, 1)} ON CONFLICT DO NOTHING "
        f"RETURNING {q.quote('task_id')}, {q.quote('func_name')}, {q.quote('status')}), "
        f"c AS ({pg_counted(counters, rows, f'${len(names) + 1}')}) "
        f"SELECT {q.quote('task_id')} FROM i"
    )


@lru_cache(maxsize=256)
def _transition_sql(
    tasks: Table, counters: Table, columns: tuple[Any, ...], shapes: tuple[Shape, ...]
) -> str:
    """The statement of :func:`taskflow_sql.grouped._pg_all`, its rows as arrays.

    ``$1`` is ``updated_at``, ``$2`` the counter slot, then for each part the arrays of
    its ``task_id`` and fields. ``WITH v0 (…) AS (SELECT * FROM unnest(…)), u0 AS
    (UPDATE tasks AS t SET … FROM v0 WHERE … AND t.status IN (…) RETURNING t.…), …,
    c AS (<counters>) SELECT … FROM u0 UNION ALL …``. The parts' rows come sorted by
    id, so concurrent batches lock task rows in the same order; the counter rows are
    locked after them, in key order.
    """
    first = [3]
    for shape in shapes[:-1]:
        first.append(first[-1] + 1 + len(shape.fields))

    def arrays(k: int, names: tuple[str, ...]) -> str:
        return f"SELECT * FROM {_unnest(tasks, names, first[k])}"

    return pg_commit_sql(tasks, counters, columns, shapes, rows=arrays, stamp="$1", slot="$2")
