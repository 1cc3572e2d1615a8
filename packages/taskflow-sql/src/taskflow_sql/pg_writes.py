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

from fastapi_taskflow.models import (
    ACTIVE_STATUSES,
    APPLIED,
    KEY_RELEASING_STATUSES,
    CreateResult,
    TaskRecord,
    TaskStatus,
    Transition,
    construct,
)

from .context import SQLContext
from .errors import retried, wrap_error
from .grouped import Moved, Shape, _groups, _parts, pg_commit_sql, pg_counted, quiet_items
from .pg_kept import KeptConnection
from .rows import _utc, fast_record, normalized, record_columns, record_values, update_values

__all__ = ["CREATE_CHUNK", "PostgresWrites"]

CREATE_CHUNK = 1000
"""Most records one array-bound INSERT takes."""


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
        return self._read_record(row.values())

    def _read_record(self, cells: Any) -> TaskRecord | None:
        values = {
            name: (value if process is None or value is None else process(value))
            for (name, process), value in zip(self._reads, cells, strict=True)
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
        for start in range(0, len(records), CREATE_CHUNK):
            chunk = records[start : start + CREATE_CHUNK]
            rows = [record_values(record) for record in chunk]
            args: list[Any] = [self._array(name, [row[name] for row in rows]) for name in names]
            args.append(zlib.crc32(chunk[0].task_id.encode()) % slots)
            inserted = {row[0] for row in await self._fetch("creating tasks", sql, args)}
            results += [
                construct(CreateResult, record=normalized(record), created=True)
                if record.task_id in inserted
                else None
                for record in chunk
            ]
        return results

    async def transition_many(self, transitions: Sequence[Transition], now: Any) -> list[Any]:
        """Every item and the counters in one statement (see :func:`_transition_sql`)."""
        results: list[Moved] = [None] * len(transitions)
        groups = _groups(transitions)
        if not groups:
            return results
        quiet = quiet_items(transitions)
        parts = _parts(groups)
        tables = self._ctx.tables
        sql = _transition_sql(
            tables.tasks, tables.counters, self._columns, tuple(shape for shape, _ in parts)
        )
        first = min(str(values["task_id"]) for _, items in parts for _, values in items)
        args = [self._stamp(now), zlib.crc32(first.encode()) % self._ctx.counter_slots]
        where = self._part_arrays(parts, args)
        for row in await self._fetch("changing tasks' status", sql, args):
            index = where[row[0]]
            results[index] = APPLIED if index in quiet else self._record(row)
        return results

    def _stamp(self, now: Any) -> Any:
        process = self._binds["updated_at"]
        return process(now) if process is not None else now

    def _part_arrays(
        self, parts: Sequence[tuple[Shape, list[tuple[int, dict[str, Any]]]]], args: list[Any]
    ) -> dict[str, int]:
        """Append each part's arrays (its ``task_id`` and fields) to ``args``; return
        where each id's result goes."""
        where: dict[str, int] = {}
        for shape, items in parts:
            for name in ("task_id", *shape.fields):
                args.append(self._array(name, [values.get(name) for _, values in items]))
            where.update((values["task_id"], index) for index, values in items)
        return where

    async def write_many(
        self, creates: Sequence[TaskRecord], transitions: Sequence[Transition], now: Any
    ) -> tuple[list[CreateResult | None], list[Moved]]:
        """``create_many`` then ``transition_many`` as one statement (see
        :func:`_write_sql`): one round trip, one transaction, counters included.

        ``creates`` (at most :data:`CREATE_CHUNK`) have distinct ids and keys and no
        tags (the caller checks). A create whose id or active key a stored task holds
        gets that task as it was before the changes, as when the creates run first;
        None for one that met a task committed during the statement (the caller then
        creates it the usual way, and applies the change naming it, if any, after).

        In one statement a change does not see the rows it inserts, so a change to a
        task created by the same call is applied to its row before the insert (the row
        goes in already changed, and is counted in its new status) when the new record
        is in one of the expected statuses; it also stays among the UPDATEs, which
        change the stored task instead when the id was taken. The caller keeps away a
        change that would release the key of a record created by the same call (the
        insert must still check that key).
        """
        tables = self._ctx.tables
        names = [column.name for column in tables.tasks.c]
        rows = [record_values(record) for record in creates]
        results: list[Moved] = [None] * len(transitions)
        quiet = quiet_items(transitions)
        parts = _parts(_groups(transitions))
        if not parts:  # no change can succeed (each names no expected status)
            return await self.create_new(creates), results
        ahead = _changed_ahead(creates, rows, transitions, now)
        shapes = tuple(shape for shape, _ in parts)
        sql = _write_sql(tables.tasks, tables.counters, self._columns, shapes)
        first = min(
            [str(values["task_id"]) for _, items in parts for _, values in items]
            + [record.task_id for record in creates]
        )
        args: list[Any] = [self._stamp(now), zlib.crc32(first.encode()) % self._ctx.counter_slots]
        args += [self._array(name, [row[name] for row in rows]) for name in names]
        where = self._part_arrays(parts, args)
        inserted: set[str] = set()
        by_id: dict[str, TaskRecord | None] = {}
        by_key: dict[str, TaskRecord | None] = {}
        for row in await self._fetch("writing tasks", sql, args):
            kind, key, cells = row[0], row[1], list(row.values())[2:]
            if kind == _INSERTED:
                inserted.add(cells[0])
                continue
            if kind == _CHANGED:
                index = where[cells[0]]
                results[index] = APPLIED if index in quiet else self._read_record(cells)
                continue
            record = self._read_record(cells)
            by_id[cells[0]] = record
            if key is not None:
                by_key[key] = record
        made: list[CreateResult | None] = []
        for at, (record, row) in enumerate(zip(creates, rows, strict=True)):
            if record.task_id in inserted:
                made.append(construct(CreateResult, record=normalized(record), created=True))
                if at in ahead:
                    index = ahead[at]
                    results[index] = APPLIED if index in quiet else fast_record(_as_read(row))
                continue
            found = by_id.get(record.task_id)
            if found is None and row["active_key"] is not None:
                found = by_key.get(row["active_key"])
            made.append(None if found is None else CreateResult(record=found, created=False))
        return made, results


def _changed_ahead(
    creates: Sequence[TaskRecord],
    rows: list[dict[str, Any]],
    transitions: Sequence[Transition],
    now: Any,
) -> dict[int, int]:
    """Apply to ``rows`` (the new rows) the changes naming a record of ``creates`` whose
    status they expect, as the grouped UPDATE would (see
    :func:`taskflow_sql.grouped._assignments`); return ``{create index: change index}``."""
    created = {record.task_id: at for at, record in enumerate(creates)}
    ahead: dict[int, int] = {}
    if not created:
        return ahead
    for index, item in enumerate(transitions):
        at = created.get(item.task_id)
        if at is None or creates[at].status not in item.expected:
            continue
        new = TaskStatus(item.new)
        row = rows[at]
        row.update(update_values(item.update.changes()) if item.update is not None else {})
        row.update(prev_status=row["status"], status=new.value, updated_at=now)
        if new in KEY_RELEASING_STATUSES:
            row["active_key"] = None
        row["active_owner"] = row["owner"] if new in ACTIVE_STATUSES else None
        ahead[at] = index
    return ahead


def _as_read(row: dict[str, Any]) -> dict[str, Any]:
    """A row written here as it reads back (aware UTC datetimes)."""
    read = dict(row)
    for name in ("created_at", "updated_at", "started_at", "finished_at"):
        read[name] = _utc(read[name])
    return read


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


_CHANGED, _HELD, _INSERTED = 0, 1, 2
"""What a row of :func:`_write_sql` is: a changed task, a stored task holding a new
record's id or key, or the id of a row inserted."""


@lru_cache(maxsize=256)
def _write_sql(
    tasks: Table, counters: Table, columns: tuple[Any, ...], shapes: tuple[Shape, ...]
) -> str:
    """``create_many`` then ``transition_many`` as one PostgreSQL statement.

    ``$1`` is ``updated_at``, ``$2`` the counter slot, then one array per ``tasks``
    column (the new rows), then for each part of the changes the arrays of its
    ``task_id`` and fields::

        WITH x (…) AS (SELECT * FROM unnest(…)),
             h AS (<for each new row, the stored task with its id, and the one
                   holding its key: SELECT …, active_key FROM tasks WHERE …>),
             i AS (INSERT INTO tasks SELECT * FROM x WHERE NOT EXISTS (<h holds its id
                   or key>) ON CONFLICT DO NOTHING RETURNING …),
             v0 …, u0 AS (UPDATE tasks … RETURNING …), …,
             c AS (<counters += the rows of i, moved by those of u0, …>)
        SELECT 0, NULL, … FROM u0 UNION ALL … SELECT 1, active_key, … FROM h
        UNION ALL SELECT 2, NULL, task_id, NULL, … FROM i

    Every sub-statement sees the table as it was when the statement began, so the
    changes never see the new rows (the caller keeps such calls away) and ``h`` holds
    the stored tasks a create meets *before* the changes: exactly what a create that
    runs first would find. ``h`` also keeps those creates out of the insert, which
    could otherwise take the key a change releases in the same statement. Locks: the
    new rows, the changed task rows (sorted by id), then the counter rows in key order,
    as in :func:`taskflow_sql.grouped.pg_commit_sql`.
    """
    dialect = _pg_dialect()
    q = dialect.identifier_preparer
    names = [column.name for column in tasks.c]
    first = [3 + len(names)]
    for shape in shapes[:-1]:
        first.append(first[-1] + 1 + len(shape.fields))

    def arrays(k: int, part: tuple[str, ...]) -> str:
        return f"SELECT * FROM {_unnest(tasks, part, first[k])}"

    if names[0] != "task_id":  # pragma: no cover - a bug here
        raise AssertionError(f"unexpected column order {names}")
    table = q.format_table(tasks)
    header = ", ".join(q.quote(name) for name in names)
    record = ", ".join(q.quote(column.name) for column in columns)
    key = q.quote("active_key")
    task_id = q.quote("task_id")
    # One probe of the primary key and one of the key index per new row: a LATERAL
    # subquery with LIMIT is never flattened into a join, so no plan (not even a
    # generic one cached while the table was small) reads the table another way.
    held = " UNION ALL ".join(
        f"SELECT f.* FROM x CROSS JOIN LATERAL (SELECT {record}, {key} FROM {table} "
        f"WHERE {name} = x.{name} LIMIT 1) AS f"
        for name in (task_id, key)
    )
    insert = (
        f"INSERT INTO {table} ({header}) SELECT * FROM x WHERE NOT EXISTS "
        f"(SELECT 1 FROM h WHERE h.{task_id} = x.{task_id} OR h.{key} = x.{key}) "
        f"ON CONFLICT DO NOTHING RETURNING {task_id}, {q.quote('func_name')}, "
        f"{q.quote('status')}"
    )
    key_type = tasks.c.active_key.type.compile(dialect=dialect)
    nothing = ", ".join(
        f"CAST(NULL AS {column.type.compile(dialect=dialect)})" for column in columns[1:]
    )
    tail = (
        f" UNION ALL SELECT {_HELD}, {key}, {record} FROM h"
        f" UNION ALL SELECT {_INSERTED}, CAST(NULL AS {key_type}), {task_id}, {nothing} FROM i"
    )
    return pg_commit_sql(
        tasks,
        counters,
        columns,
        shapes,
        rows=arrays,
        stamp="$1",
        slot="$2",
        before=(
            f"x ({header}) AS (SELECT * FROM {_unnest(tasks, names, 3)})",
            f"h AS ({held})",
            f"i AS ({insert})",
        ),
        created="i",
        label=f"{_CHANGED}, CAST(NULL AS {key_type}), ",
        after=tail,
    )
