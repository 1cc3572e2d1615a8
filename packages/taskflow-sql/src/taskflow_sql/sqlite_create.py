"""``create_many`` as one write operation: (probe,) then one ``executemany``.

A batch of records with distinct ids and keys is created by one probe for ids and keys
already taken and one ``executemany`` of the rest; a record that conflicts goes the way
of :meth:`Store.create` (it finds the existing task or the key holder) in the same
transaction.

* SQLite: the group-commit writer holds the write lock (``BEGIN IMMEDIATE``) for the
  whole operation, so what it read cannot change before it writes; the rows go
  straight to the stdlib connection (compiled once, values bound with the columns' own
  processors).
* MySQL/MariaDB: the driver sends the rows as one multi-row INSERT, tried first
  without a probe; a duplicate-key error rolls back only that statement, and then the
  probe picks the records that are new. Another transaction may take an id or key
  between the probe and the insert; those records are then created one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from typing import Any

from sqlalchemy import Boolean, Table, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError

from fastapi_taskflow.models import CreateResult, TaskRecord, construct

from .context import Tx, WriteOp
from .mysql_raw import bound, driver_for
from .rows import normalized, record_values, tag_token
from .types import UTCDateTime, sqlite_stamp

__all__ = ["create_batch_op"]

_PROBE = 500
_MYSQL_DUPLICATE = 1062


@dataclass(frozen=True)
class _InsertPlan:
    """The positional INSERT of one task row and how to bind a row's values to it."""

    sql: str
    cells: Callable[[dict[str, Any]], tuple[Any, ...]]
    """A row's values (``record_values``) in the statement's order, unprocessed."""
    processed: tuple[tuple[int, Callable[[Any], Any]], ...]
    """The positions whose value goes through a bind processor (when not None)."""

    def bind(self, row: dict[str, Any]) -> list[Any]:
        """``row``'s parameters for :attr:`sql`."""
        return processed_cells(self.cells(row), self.processed)


def processed_cells(
    cells: Sequence[Any], processed: Sequence[tuple[int, Callable[[Any], Any]]]
) -> list[Any]:
    """``cells`` with the value at each of ``processed``'s positions (when not None) put
    through its bind processor: a row of values for one of the writer's raw statements."""
    row = list(cells)
    for position, process in processed:
        value = row[position]
        if value is not None:
            row[position] = process(value)
    return row


@lru_cache(maxsize=16)
def _plan(tasks: Table) -> _InsertPlan:
    """The positional INSERT of one task row, and each column's bind processor."""
    dialect: Dialect = sqlite.dialect(paramstyle="qmark")
    names = tuple(column.name for column in tasks.c)
    compiled = tasks.insert().compile(dialect=dialect, column_keys=list(names))
    order = tuple(compiled.positiontup or ())
    processed = []
    for position, name in enumerate(order):
        process = sqlite_binder(tasks, name)
        if process is not None:
            processed.append((position, process))
    getter = itemgetter(*order)
    return _InsertPlan(str(compiled), getter, tuple(processed))


def sqlite_binder(tasks: Table, name: str) -> Callable[[Any], Any] | None:
    """The bind processor of column ``name`` for the SQLite writer's raw statements
    (:func:`~taskflow_sql.types.sqlite_stamp` for datetimes)."""
    column_type = tasks.c[name].type
    if isinstance(column_type, UTCDateTime):
        return sqlite_stamp
    if isinstance(column_type, Boolean):
        # the driver binds True/False as 1/0 too, but several times slower than an int:
        # Python 3.11's sqlite3 looks for an adapter for any other type than int, float,
        # str and bytearray, and formats an AttributeError when it finds none
        return int
    dialect: Dialect = sqlite.dialect(paramstyle="qmark")
    return column_type.dialect_impl(dialect).bind_processor(dialect)


def create_batch_op(
    records: Sequence[TaskRecord], fallback: Callable[[TaskRecord], WriteOp[CreateResult]]
) -> WriteOp[list[CreateResult]]:
    """One write operation creating ``records`` (distinct ids and keys), in order.

    Args:
        records: the batch.
        fallback: builds the one-record operation for a record whose id or key is taken.
    """
    values = [record_values(record) for record in records]

    async def op(tx: Tx) -> list[CreateResult]:
        from .sqlite_sync import SyncTxConnection

        tables = tx.ctx.tables
        tasks = tables.tasks
        raw = isinstance(tx.conn, SyncTxConnection)
        if not raw and tx.ctx.kind != "mysql":  # pragma: no cover - not used elsewhere
            return [await fallback(record)(tx) for record in records]
        everyone = list(zip(records, values, strict=True))
        if not raw and await _insert_mysql(tx, values):
            fresh = everyone  # the usual case on MySQL: no probe needed
        else:
            if raw:
                assert isinstance(tx.conn, SyncTxConnection)
                driver = tx.conn.sync.connection.driver_connection
                ids, keys = _taken_raw(driver, tasks, values)
            else:
                ids, keys = await _taken(tx, tasks, values)
            fresh = [
                (record, row)
                for record, row in everyone
                if row["task_id"] not in ids and row["active_key"] not in keys
            ]
            if fresh and not raw and not await _insert_mysql(tx, [row for _, row in fresh]):
                fresh = []  # someone took an id or key meanwhile: create them one by one
        if fresh and raw:
            assert isinstance(tx.conn, SyncTxConnection)
            plan = _plan(tasks)
            driver = tx.conn.sync.connection.driver_connection
            assert driver is not None
            driver.executemany(plan.sql, [plan.bind(row) for _, row in fresh])
        if fresh:
            tags = [
                {"task_id": record.task_id, "key": tag_token(key), "value": tag_token(value)}
                for record, _ in fresh
                for key, value in record.tags.items()
            ]
            if tags:
                await tx.conn.execute(tables.tags.insert(), tags)
            for record, _ in fresh:
                tx.count(record.func_name, record.task_id, record.status, +1)
        created = {record.task_id for record, _ in fresh}
        results = []
        for record in records:
            if record.task_id in created:
                results.append(construct(CreateResult, record=normalized(record), created=True))
            else:
                results.append(await fallback(record)(tx))
        return results

    return op


async def _insert_mysql(tx: Tx, rows: list[dict[str, Any]]) -> bool:
    """Insert ``rows`` as one statement; False (nothing written) on a duplicate key.

    With an async MySQL driver the rows go to it directly (:mod:`taskflow_sql.mysql_raw`).
    """
    tasks = tx.ctx.tables.tasks
    driver = await driver_for(tx)
    try:
        if driver is None:
            await tx.conn.execute(tasks.insert(), rows)
        else:
            sql, names = _mysql_plan(tasks, driver.dialect)
            binds = driver.binds(tasks, names)
            await driver.execute_many(
                sql, [bound([row[name] for name in names], binds) for row in rows]
            )
    except Exception as exc:
        args = getattr(getattr(exc, "orig", exc), "args", ())
        ours = isinstance(exc, IntegrityError) or driver is not None
        if ours and args and args[0] == _MYSQL_DUPLICATE:
            return False
        raise
    return True


@lru_cache(maxsize=16)
def _mysql_plan(tasks: Table, dialect: Dialect) -> tuple[str, tuple[str, ...]]:
    """The INSERT of one task row compiled for the MySQL driver, and its columns in order."""
    names = [column.name for column in tasks.c]
    compiled = tasks.insert().compile(dialect=dialect, column_keys=names)
    return str(compiled), tuple(compiled.positiontup or ())


async def _taken(tx: Tx, tasks: Table, values: list[dict[str, Any]]) -> tuple[set[str], set[str]]:
    """The batch's ids, and key hashes, that stored tasks already hold."""
    ids = [row["task_id"] for row in values]
    keys = [row["active_key"] for row in values if row["active_key"] is not None]
    found: tuple[set[str], set[str]] = (set(), set())
    for column, wanted, into in ((tasks.c.task_id, ids, 0), (tasks.c.active_key, keys, 1)):
        for start in range(0, len(wanted), _PROBE):
            part = wanted[start : start + _PROBE]
            rows = await tx.conn.execute(select(column).where(column.in_(part)))
            found[into].update(rows.scalars())
    return found


@lru_cache(maxsize=64)
def _probe_sql(tasks: Table, column: str, size: int) -> str:
    """``SELECT <column> FROM tasks WHERE <column> IN (?, …)`` for ``size`` values."""
    q = sqlite.dialect().identifier_preparer
    marks = ", ".join("?" * size)
    name = q.quote(column)
    return f"SELECT {name} FROM {q.format_table(tasks)} WHERE {name} IN ({marks})"


def _taken_raw(
    driver: Any, tasks: Table, values: list[dict[str, Any]]
) -> tuple[set[str], set[str]]:
    """:func:`_taken` on the SQLite writer's driver: prebuilt SQL, lists padded to a
    power of two with NULLs (which match nothing), so the driver's statement cache
    keeps a handful of statements."""
    ids = [row["task_id"] for row in values]
    keys = [row["active_key"] for row in values if row["active_key"] is not None]
    found: tuple[set[str], set[str]] = (set(), set())
    for column, wanted, into in (("task_id", ids, 0), ("active_key", keys, 1)):
        for start in range(0, len(wanted), _PROBE):
            part = wanted[start : start + _PROBE]
            size = 1
            while size < len(part):
                size *= 2
            padded = part + [None] * (size - len(part))
            rows = driver.execute(_probe_sql(tasks, column, size), padded).fetchall()
            found[into].update(row[0] for row in rows)
    return found
