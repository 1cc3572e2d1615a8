"""Group commit of transitions: many compare-and-sets of one shape in one statement.

:meth:`Store.transition_many` receives the starts and finishes of many tasks at once.
Items with the same *shape* (expected statuses, new status, fields set) become one
statement over a list of rows, and all the statements of a call run in one
transaction:

* PostgreSQL and SQLite (≥ 3.33): ``WITH v(task_id, …) AS (VALUES …) UPDATE tasks AS t
  SET … FROM v WHERE t.task_id = v.task_id AND t.status IN (…) RETURNING t.…`` — the
  row lock (PostgreSQL) or the single writer (SQLite) makes each row's compare-and-set
  atomic, and ``prev_status`` is saved by the same statement for the counters.
* MySQL/MariaDB (no ``UPDATE … RETURNING``): one ``SELECT … FOR UPDATE`` of every
  row (ordered, so concurrent batches lock in the same order), the winners decided
  from it, and one ``UPDATE tasks AS t JOIN (SELECT … UNION ALL …) AS v`` per shape;
  the records returned are the locked rows with the changes applied (a read-back
  ``SELECT`` only for a shape that sets ``progress``).

Row lists are padded to a power of two (rows with a NULL id match nothing), so each
shape compiles to a handful of statements that SQLAlchemy and the drivers then reuse.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache, partial
from operator import itemgetter
from typing import Any

from sqlalchemy import Table, bindparam, select, text
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.selectable import TextualSelect

from fastapi_taskflow.isotime import parse_iso
from fastapi_taskflow.models import (
    ACTIVE_STATUSES,
    APPLIED,
    KEY_RELEASING_STATUSES,
    Applied,
    TaskRecord,
    TaskStatus,
    Transition,
)

from .context import Tx
from .mysql_raw import bound, driver_for
from .mysql_raw import read as read_row
from .rows import fast_record, record_columns, sqlite_reader, update_values
from .sqlite_create import processed_cells, sqlite_binder
from .sqlite_sync import SyncTxConnection
from .types import UTCDateTime

__all__ = ["Shape", "pg_transitions", "quiet_items", "run_transitions"]

Moved = TaskRecord | Applied | None
"""One item's answer: the record after the change, ``APPLIED`` (an item sent with
``read_back=False``: no record is built) or None (not applied)."""

_MAX_ROWS = 128


@dataclass(frozen=True)
class Shape:
    """What a group's items share: the statement they can be written with."""

    expected: tuple[str, ...]
    new: str
    fields: tuple[str, ...]

    @property
    def release_key(self) -> bool:
        """The new status gives up the idempotency key."""
        return TaskStatus(self.new) in KEY_RELEASING_STATUSES

    @property
    def read_back(self) -> bool:
        """MySQL must read the rows back after the UPDATE (see :func:`_mysql`)."""
        return not _EXACT_FIELDS.issuperset(self.fields)

    @property
    def active(self) -> bool:
        """The new status is PENDING or RUNNING (the owner stays visible)."""
        return TaskStatus(self.new) in ACTIVE_STATUSES


def quiet_items(transitions: Sequence[Transition]) -> frozenset[int]:
    """The positions of the items sent with ``read_back=False``: each is answered
    ``APPLIED`` when applied, without building its record."""
    return frozenset(i for i, item in enumerate(transitions) if not item.read_back)


def _padded(n: int) -> int:
    size = 1
    while size < n:
        size *= 2
    return size


@lru_cache(maxsize=64)
def _expected(statuses: frozenset[TaskStatus]) -> tuple[str, ...]:
    return tuple(sorted({TaskStatus(status).value for status in statuses}))


def _groups(
    transitions: Sequence[Transition],
) -> dict[Shape, list[tuple[int, dict[str, Any]]]]:
    groups: dict[Shape, list[tuple[int, dict[str, Any]]]] = {}
    shapes: dict[tuple[frozenset[TaskStatus], TaskStatus, tuple[str, ...]], Shape] = {}
    for index, item in enumerate(transitions):
        values = update_values(item.update.changes()) if item.update is not None else {}
        key = (item.expected, item.new, tuple(sorted(values)))
        shape = shapes.get(key)
        if shape is None:
            expected = _expected(item.expected)
            if not expected:
                continue
            shape = shapes[key] = Shape(expected, TaskStatus(item.new).value, key[2])
        values["task_id"] = item.task_id
        groups.setdefault(shape, []).append((index, values))
    return groups


async def run_transitions(tx: Tx, transitions: Sequence[Transition], now: Any) -> list[Moved]:
    """Apply ``transitions`` inside ``tx``; one result per item, in order."""
    results: list[Moved] = [None] * len(transitions)
    groups = _groups(transitions)
    if not groups:
        return results
    quiet = quiet_items(transitions)
    if tx.ctx.kind == "mysql":
        await _mysql(tx, groups, now, results, quiet)
        return results
    columns = tuple(record_columns(tx.ctx.tables))
    raw = _sqlite_driver(tx)
    if raw is not None:
        _sqlite_raw(tx, raw, columns, groups, now, results, quiet)
        return results
    for shape, items in groups.items():
        for start in range(0, len(items), _MAX_ROWS):
            part = items[start : start + _MAX_ROWS]
            size = _padded(len(part))
            stmt = _update_from(tx.ctx.tables.tasks, columns, shape, size, tx.ctx.kind)
            params: dict[str, Any] = {"p_status": shape.new, "p_updated_at": now}
            for i in range(size):
                values = part[i][1] if i < len(part) else {}
                params[f"r{i}_task_id"] = values.get("task_id")
                for name in shape.fields:
                    params[f"r{i}_{name}"] = values.get(name)
            where = {values["task_id"]: index for index, values in part}
            for row in await tx.conn.execute(stmt, params):
                index = where[row.task_id]
                results[index] = APPLIED if index in quiet else fast_record(row._mapping)
                tx.move(row.func_name, row.task_id, row.prev_status, shape.new)
    return results


def _sqlite_driver(tx: Tx) -> Any:
    """The stdlib ``sqlite3`` connection under the SQLite writer's transaction, or None.

    The group-commit writer runs on its own thread with a synchronous connection; there
    the multi-row statement goes straight to the driver (compiled once, values bound
    with the columns' own processors), which skips SQLAlchemy's per-execution work on
    hundreds of parameters and rows.
    """
    if tx.ctx.kind != "sqlite" or not isinstance(tx.conn, SyncTxConnection):
        return None
    return tx.conn.sync.connection.driver_connection


def _sqlite_raw(
    tx: Tx,
    raw: Any,
    columns: tuple[Any, ...],
    groups: dict[Shape, list[tuple[int, dict[str, Any]]]],
    now: Any,
    results: list[Moved],
    quiet: frozenset[int],
) -> None:
    """The SQLite statements of :func:`run_transitions`, on the writer's driver.

    The ``quiet`` items of a shape (answered ``APPLIED``) go in statements of their own
    that return only what the counters need, not whole rows."""
    tasks = tx.ctx.tables.tasks
    thin = _thin_columns(tasks)
    for shape, every in groups.items():
        if quiet:
            loud = [item for item in every if item[0] not in quiet]
            lists = [(loud, columns), ([item for item in every if item[0] in quiet], thin)]
        else:
            lists = [(every, columns)]
        for items, returning in lists:
            _sqlite_shape(tx, raw, tasks, returning, shape, items, now, results)


def _sqlite_shape(
    tx: Tx,
    raw: Any,
    tasks: Table,
    columns: tuple[Any, ...],
    shape: Shape,
    items: list[tuple[int, dict[str, Any]]],
    now: Any,
    results: list[Moved],
) -> None:
    """One shape's items, in statements of up to ``_MAX_ROWS`` rows returning
    ``columns`` (whole records, or :func:`_thin_columns`)."""
    for start in range(0, len(items), _MAX_ROWS):
        part = items[start : start + _MAX_ROWS]
        size = _padded(len(part))
        plan = _raw_plan(tasks, columns, shape, size)
        values: list[Any] = []
        cells = plan.cells
        processed = plan.processed
        for _, item in part:
            values.extend(processed_cells(cells(item), processed) if processed else cells(item))
        values.extend(plan.padding[: (size - len(part)) * plan.width])
        values.append(shape.new)
        values.append(plan.stamp(now))
        where = {item["task_id"]: index for index, item in part}
        read = plan.read
        for row in raw.execute(plan.sql, values).fetchall():
            task_id = row[0]
            tx.move(row[1], task_id, row[plan.prev_status], shape.new)
            results[where[task_id]] = read(row)


def _sqlite_datetime(value: Any) -> Any:
    moment = parse_iso(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


@dataclass(frozen=True)
class _RawPlan:
    """A SQLite grouped statement, positional, and how to bind and read it raw."""

    sql: str
    cells: Callable[[dict[str, Any]], Sequence[Any]]
    """An item's values in its row's order: ``task_id``, then the shape's fields
    (every item of a shape has them all), unprocessed."""
    processed: tuple[tuple[int, Callable[[Any], Any]], ...]
    """The positions in a row whose value goes through a bind processor (when not
    None)."""
    width: int
    """How many values a row has."""
    padding: tuple[Any, ...]
    """Rows that match no task, to fill a statement up to its size."""
    stamp: Any
    """The ``updated_at`` bind processor."""
    read: Callable[[Sequence[Any]], Moved]
    """A returned row (``task_id``, ``func_name``, …) as a record (``APPLIED`` for a
    statement returning :func:`_thin_columns`)."""
    prev_status: int
    """Where ``prev_status`` is in a returned row."""


def _identity(value: Any) -> Any:
    return value


@lru_cache(maxsize=512)
def _raw_plan(tasks: Table, columns: tuple[Any, ...], shape: Shape, size: int) -> _RawPlan:
    """The positional SQL of :func:`_update_from`, and how to bind and read it raw.

    Its parameters are, in text order, every row's cells and then ``p_status`` and
    ``p_updated_at`` (checked here against the compiled statement).
    """
    from sqlalchemy.dialects import sqlite

    dialect: Dialect = sqlite.dialect(paramstyle="qmark")
    compiled = _update_from(tasks, columns, shape, size, "sqlite").compile(dialect=dialect)
    names = ("task_id", *shape.fields)
    order = [f"r{i}_{name}" for i in range(size) for name in names]
    order += ["p_status", "p_updated_at"]
    if list(compiled.positiontup or ()) != order:  # pragma: no cover - a bug here
        raise AssertionError(f"unexpected parameter order {compiled.positiontup}")

    binder = partial(sqlite_binder, tasks)

    reads = []
    for column in columns:
        if isinstance(column.type, UTCDateTime):
            reads.append((column.name, _sqlite_datetime))
        else:
            reads.append(
                (column.name, column.type.dialect_impl(dialect).result_processor(dialect, None))
            )

    def slow(row: Sequence[Any]) -> dict[str, Any]:
        return {
            name: (value if process is None or value is None else process(value))
            for (name, process), value in zip(reads, row, strict=True)
        }

    names_out = [column.name for column in columns]
    if names_out[:2] != ["task_id", "func_name"]:  # pragma: no cover - a bug here
        raise AssertionError(f"unexpected column order {names_out}")
    thin = columns == _thin_columns(tasks)
    processors = [(position, binder(name)) for position, name in enumerate(names)]
    return _RawPlan(
        sql=str(compiled),
        cells=itemgetter(*names) if len(names) > 1 else (lambda item: (item["task_id"],)),
        processed=tuple((at, process) for at, process in processors if process is not None),
        width=len(names),
        # a row that matches no task (a NULL id): its other values are 0, not NULL,
        # which the driver binds far faster (see sqlite_create.sqlite_binder)
        padding=((None,) + (0,) * (len(names) - 1)) * size,
        stamp=binder("updated_at") or _identity,
        read=_applied if thin else sqlite_reader(columns, slow),
        prev_status=names_out.index("prev_status"),
    )


@lru_cache(maxsize=16)
def _thin_columns(tasks: Table) -> tuple[Any, ...]:
    """What a statement of quiet items returns: the id, and the function and previous
    status the counters need."""
    return (tasks.c.task_id, tasks.c.func_name, tasks.c.prev_status)


def _applied(_: Sequence[Any]) -> Applied:
    return APPLIED


@lru_cache(maxsize=512)
def _update_from(
    tasks: Table, columns: tuple[Any, ...], shape: Shape, size: int, kind: str
) -> TextualSelect:
    """The PostgreSQL/SQLite multi-row compare-and-set for ``size`` rows of ``shape``."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect: Dialect = postgresql.dialect() if kind == "postgresql" else sqlite.dialect()  # type: ignore[no-untyped-call]
    q = dialect.identifier_preparer
    c = tasks.c
    names = ("task_id", *shape.fields)

    def cell(i: int, name: str) -> str:
        if kind != "postgresql":
            return f":r{i}_{name}"
        kind_sql = c[name].type.compile(dialect=dialect)
        return f"CAST(:r{i}_{name} AS {kind_sql})"

    rows = ", ".join("(" + ", ".join(cell(i, name) for name in names) + ")" for i in range(size))
    header = ", ".join(q.quote(name) for name in names)
    sets = _assignments(q, shape, target="", prev_status=f"t.{q.quote('status')}")
    expected = ", ".join(f"'{status}'" for status in shape.expected)
    # SQLite's RETURNING names the target table's columns bare (no alias allowed);
    # PostgreSQL's must be qualified, since v has columns of the same names.
    qualifier = "t." if kind == "postgresql" else ""
    returning = ", ".join(f"{qualifier}{q.quote(column.name)}" for column in columns)
    sql = (
        f"WITH v ({header}) AS (VALUES {rows}) "
        f"UPDATE {q.format_table(tasks)} AS t SET {', '.join(sets)} "
        f"FROM v WHERE t.{q.quote('task_id')} = v.{q.quote('task_id')} "
        f"AND t.{q.quote('status')} IN ({expected}) RETURNING {returning}"
    )
    binds = [bindparam("p_status", type_=c.status.type)]
    binds.append(bindparam("p_updated_at", type_=c.updated_at.type))
    binds.extend(
        bindparam(f"r{i}_{name}", type_=c[name].type) for i in range(size) for name in names
    )
    return text(sql).bindparams(*binds).columns(*columns)


async def _mysql(
    tx: Tx,
    groups: dict[Shape, list[tuple[int, dict[str, Any]]]],
    now: Any,
    results: list[Moved],
    quiet: frozenset[int],
) -> None:
    """MySQL/MariaDB: lock and read every row, decide the winners, update per shape.

    The locking read takes whole rows: a winner's record is then that row with the
    shape's changes applied (:func:`_as_stored`), since nothing else can change a row
    this transaction holds. Only a shape setting a column whose stored value may
    differ from the one written (``progress``: MySQL's single-precision ``FLOAT``) is
    read back after its UPDATE.
    """
    tables = tx.ctx.tables
    tasks = tables.tasks
    ids = sorted(values["task_id"] for items in groups.values() for _, values in items)
    columns = tuple(record_columns(tables))
    driver = await driver_for(tx)
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        if driver is not None:
            size = _padded(len(part))
            sql = _mysql_locking_sql(tasks, columns, size, driver.dialect)
            names = [column.name for column in columns]
            reads = driver.reads(columns)
            padded = part + [None] * (size - len(part))
            for raw_row in await driver.fetch(sql, padded):
                row = read_row(raw_row, names, reads)
                found[row["task_id"]] = row
        else:
            locking = _mysql_locking_read(tasks, columns)
            rows = await tx.conn.execute(locking, {"p_ids": part})
            found.update({row.task_id: dict(row._mapping) for row in rows})
    stamp = _utc(now)
    read_back: dict[str, int] = {}
    for shape, items in groups.items():
        winners = []
        exact = not shape.read_back
        for index, values in items:
            current = found.get(values["task_id"])
            if current is None or current["status"] not in shape.expected:
                continue
            old = current["status"]
            values["prev_status"] = old
            winners.append(values)
            # One counter slot for the whole call (picked by its smallest id): a batch
            # of hundreds of tasks then changes two counter rows per function, not 32.
            tx.move(current["func_name"], ids[0], old, shape.new)
            if index in quiet:
                results[index] = APPLIED
            elif exact:
                current.update(prev_status=old, status=shape.new, updated_at=stamp)
                for name in shape.fields:
                    current[name] = _as_stored(name, values[name])
                results[index] = fast_record(current)
            else:
                read_back[values["task_id"]] = index
        for start in range(0, len(winners), _MAX_ROWS):
            part = winners[start : start + _MAX_ROWS]
            size = _padded(len(part))
            if driver is not None:
                sql, cells = _mysql_update_raw(tasks, shape, size, driver.dialect)
                processors = driver.binds(tasks, cells)
                args: list[Any] = []
                for values in part:
                    args += bound([values.get(name) for name in cells], processors)
                args += [None] * ((size - len(part)) * len(cells))
                args += bound([shape.new, now], driver.binds(tasks, ("status", "updated_at")))
                await driver.fetch(sql, args)
                continue
            stmt = _mysql_update(tasks, shape, size)
            params: dict[str, Any] = {"p_status": shape.new, "p_updated_at": now}
            for i in range(size):
                values = part[i] if i < len(part) else {}
                for name in ("task_id", "prev_status", *shape.fields):
                    params[f"r{i}_{name}"] = values.get(name)
            await tx.conn.execute(stmt, params)
    if not read_back:
        return
    order = sorted(read_back)
    for start in range(0, len(order), 500):
        chunk = order[start : start + 500]
        again = await tx.conn.execute(select(*columns).where(tasks.c.task_id.in_(chunk)))
        for stored in again:
            results[read_back[stored.task_id]] = fast_record(stored._mapping)


def _utc(value: datetime) -> datetime:
    """How ``UTCDateTime`` reads back what it stored: aware UTC (naive is taken as UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _as_stored(name: str, value: Any) -> Any:
    """A written update value as a row read back holds it (see :func:`_mysql`); JSON
    columns (``result``) stay the text written, as :func:`fast_record` decodes them."""
    if value is None:
        return None
    if name in ("started_at", "finished_at"):
        return _utc(value)
    if name == "cancel_requested":
        return bool(value)
    return value


_EXACT_FIELDS = frozenset(
    {"attempt", "started_at", "finished_at", "error", "result", "cancel_requested", "owner"}
)
"""Update fields MySQL stores exactly as written (``DATETIME(6)`` keeps microseconds)."""


@lru_cache(maxsize=64)
def _mysql_locking_sql(tasks: Table, columns: tuple[Any, ...], size: int, dialect: Dialect) -> str:
    """:func:`_mysql_locking_read` for ``size`` ids, compiled for the driver (``%s``)."""
    stmt = (
        select(*columns)
        .where(tasks.c.task_id.in_([bindparam(f"i{k}") for k in range(size)]))
        .order_by(tasks.c.task_id)
        .with_for_update()
    )
    return str(stmt.compile(dialect=dialect))


@lru_cache(maxsize=512)
def _mysql_update_raw(
    tasks: Table, shape: Shape, size: int, dialect: Dialect
) -> tuple[str, tuple[str, ...]]:
    """:func:`_mysql_update` compiled for the driver (``%s``), and each row's columns.

    Its parameters are, in text order, every row's cells and then the new status and
    ``updated_at`` (checked here against the compiled statement).
    """
    compiled = _mysql_update(tasks, shape, size).compile(dialect=dialect)
    cells = ("task_id", "prev_status", *shape.fields)
    order = [f"r{i}_{name}" for i in range(size) for name in cells]
    order += ["p_status", "p_updated_at"]
    if list(compiled.positiontup or ()) != order:  # pragma: no cover - a bug here
        raise AssertionError(f"unexpected parameter order {compiled.positiontup}")
    return str(compiled), cells


@lru_cache(maxsize=64)
def _mysql_locking_read(tasks: Table, columns: tuple[Any, ...]) -> Any:
    """``SELECT <record columns> FROM tasks WHERE task_id IN :p_ids ORDER BY task_id FOR
    UPDATE`` (ordered, so concurrent batches lock in the same order)."""
    return (
        select(*columns)
        .where(tasks.c.task_id.in_(bindparam("p_ids", expanding=True)))
        .order_by(tasks.c.task_id)
        .with_for_update()
    )


@lru_cache(maxsize=512)
def _mysql_update(tasks: Table, shape: Shape, size: int) -> TextClause:
    """``UPDATE tasks AS t JOIN (SELECT … UNION ALL …) AS v ON … SET …`` for MySQL.

    The rows were locked and checked already; ``prev_status`` comes from that read,
    since a multi-table UPDATE does not promise to assign left to right.
    """
    from sqlalchemy.dialects import mysql

    dialect: Dialect = mysql.dialect()
    q = dialect.identifier_preparer
    c = tasks.c
    names = ("task_id", "prev_status", *shape.fields)
    selects = " UNION ALL ".join(
        "SELECT " + ", ".join(f":r{i}_{name} AS {q.quote(name)}" for name in names)
        for i in range(size)
    )
    sets = _assignments(q, shape, target="t.", prev_status=f"v.{q.quote('prev_status')}")
    sql = (
        f"UPDATE {q.format_table(tasks)} AS t JOIN ({selects}) AS v "
        f"ON t.{q.quote('task_id')} = v.{q.quote('task_id')} SET {', '.join(sets)}"
    )
    binds = [
        bindparam("p_status", type_=c.status.type),
        bindparam("p_updated_at", type_=c.updated_at.type),
    ]
    binds.extend(
        bindparam(f"r{i}_{name}", type_=c[name].type) for i in range(size) for name in names
    )
    return text(sql).bindparams(*binds)


def _parts(
    groups: dict[Shape, list[tuple[int, dict[str, Any]]]],
) -> list[tuple[Shape, list[tuple[int, dict[str, Any]]]]]:
    """Split each shape's items into statements of at most ``_MAX_ROWS`` rows, by id."""
    parts = []
    for shape, items in groups.items():
        ordered = sorted(items, key=lambda item: str(item[1]["task_id"]))
        for start in range(0, len(ordered), _MAX_ROWS):
            parts.append((shape, ordered[start : start + _MAX_ROWS]))
    return parts


async def pg_transitions(
    conn: Any,
    tables: Any,
    counter_slots: int,
    transitions: Sequence[Transition],
    now: Any,
) -> list[Moved]:
    """PostgreSQL: every item and the counters in one statement (see :func:`_pg_all`).

    Run on an autocommit connection, the statement is its own transaction: one round
    trip for the whole group commit.
    """
    results: list[Moved] = [None] * len(transitions)
    quiet = quiet_items(transitions)
    groups = _groups(transitions)
    if not groups:
        return results
    parts = _parts(groups)
    layout = tuple((shape, _padded(len(items))) for shape, items in parts)
    columns = tuple(record_columns(tables))
    stmt = _pg_all(tables.tasks, tables.counters, columns, layout)
    first = min(str(values["task_id"]) for _, items in parts for _, values in items)
    params: dict[str, Any] = {
        "p_updated_at": now,
        "p_slot": zlib.crc32(first.encode()) % counter_slots,
    }
    where: dict[str, int] = {}
    for k, ((shape, items), (_, size)) in enumerate(zip(parts, layout, strict=True)):
        for i in range(size):
            values = items[i][1] if i < len(items) else {}
            params[f"k{k}r{i}_task_id"] = values.get("task_id")
            for name in shape.fields:
                params[f"k{k}r{i}_{name}"] = values.get(name)
        where.update((values["task_id"], index) for index, values in items)
    for row in await conn.execute(stmt, params):
        index = where[row.task_id]
        results[index] = APPLIED if index in quiet else fast_record(row._mapping)
    return results


@lru_cache(maxsize=256)
def _pg_all(
    tasks: Table,
    counters: Table,
    columns: tuple[Any, ...],
    layout: tuple[tuple[Shape, int], ...],
) -> TextualSelect:
    """:func:`pg_commit_sql` with each part's rows as a ``VALUES`` list of bound
    parameters (``:k<part>r<row>_<field>``), for any PostgreSQL driver."""
    from sqlalchemy.dialects import postgresql

    dialect: Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    c = tasks.c
    binds = [
        bindparam("p_updated_at", type_=c.updated_at.type),
        bindparam("p_slot", type_=counters.c.slot.type),
    ]
    sizes = [size for _, size in layout]

    def values(k: int, names: tuple[str, ...]) -> str:
        def cell(i: int, name: str) -> str:
            return f"CAST(:k{k}r{i}_{name} AS {c[name].type.compile(dialect=dialect)})"

        binds.extend(
            bindparam(f"k{k}r{i}_{name}", type_=c[name].type)
            for i in range(sizes[k])
            for name in names
        )
        rows = ", ".join(
            "(" + ", ".join(cell(i, name) for name in names) + ")" for i in range(sizes[k])
        )
        return f"VALUES {rows}"

    sql = pg_commit_sql(
        tasks,
        counters,
        columns,
        tuple(shape for shape, _ in layout),
        rows=values,
        stamp=":p_updated_at",
        slot=":p_slot",
    )
    return text(sql).bindparams(*binds).columns(*columns)


def pg_commit_sql(
    tasks: Table,
    counters: Table,
    columns: Sequence[Any],
    shapes: Sequence[Shape],
    *,
    rows: Callable[[int, tuple[str, ...]], str],
    stamp: str,
    slot: str,
    before: Sequence[str] = (),
    created: str | None = None,
    label: str = "",
    after: str = "",
) -> str:
    """One PostgreSQL statement for a whole group commit, its counters included.

    ``WITH v0 (…) AS (<rows of part 0>), u0 AS (UPDATE tasks AS t SET … FROM v0 WHERE
    … AND t.status IN (…) RETURNING t.…), v1 …, u1 …, c AS (<counters: see
    pg_counted>) SELECT … FROM u0 UNION ALL …``. ``rows(k, names)`` gives part ``k``'s
    row source for the columns ``names`` (a ``VALUES`` list, or a ``SELECT`` of
    unnested arrays); ``stamp`` and ``slot`` are the placeholders of ``updated_at`` and
    of the counter slot. Counter rows are locked in key order, after the task rows, as
    everywhere.

    To write new rows in the same statement (:func:`taskflow_sql.pg_writes._write_sql`):
    ``before`` are CTEs put first (``name AS (…)``), ``created`` names one of them
    returning the ``func_name`` and ``status`` of inserted rows (counted too),
    ``label`` is put before the columns of each changed row and ``after`` after the
    last ``SELECT``.
    """
    from sqlalchemy.dialects import postgresql

    q = postgresql.dialect().identifier_preparer  # type: ignore[no-untyped-call]
    ctes: list[str] = list(before)
    moves: list[str] = []
    if created is not None:
        moves.append(f"SELECT func_name, status, 1 AS n FROM {created}")
    names_out = ", ".join(q.quote(column.name) for column in columns)
    returning = ", ".join(f"t.{q.quote(column.name)}" for column in columns)
    for k, shape in enumerate(shapes):
        names = ("task_id", *shape.fields)
        header = ", ".join(q.quote(name) for name in names)
        sets = _assignments(
            q,
            shape,
            target="",
            prev_status=f"t.{q.quote('status')}",
            status=f"'{shape.new}'",
            values=f"v{k}",
            stamp=stamp,
        )
        expected = ", ".join(f"'{status}'" for status in shape.expected)
        ctes.append(f"v{k} ({header}) AS ({rows(k, names)})")
        ctes.append(
            f"u{k} AS (UPDATE {q.format_table(tasks)} AS t SET {', '.join(sets)} "
            f"FROM v{k} WHERE t.{q.quote('task_id')} = v{k}.{q.quote('task_id')} "
            f"AND t.{q.quote('status')} IN ({expected}) RETURNING {returning})"
        )
        moved = f"FROM u{k} WHERE prev_status <> status"
        moves.append(f"SELECT func_name, prev_status AS status, -1 AS n {moved}")
        moves.append(f"SELECT func_name, status, 1 AS n {moved}")
    ctes.append(f"c AS ({pg_counted(counters, ' UNION ALL '.join(moves), slot)})")
    selects = " UNION ALL ".join(f"SELECT {label}{names_out} FROM u{k}" for k in range(len(shapes)))
    return f"WITH {', '.join(ctes)} {selects}{after}"


def pg_counted(counters: Table, rows: str, slot: str) -> str:
    """``INSERT INTO counters SELECT func_name, status, slot, n FROM (rows) … ON
    CONFLICT DO UPDATE SET n = n + excluded.n``, in key order (the lock order).
    ``slot`` is the slot's placeholder."""
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    table = dialect.identifier_preparer.format_table(counters)
    kind = counters.c.slot.type.compile(dialect=dialect)
    return (
        f"INSERT INTO {table} (func_name, status, slot, n) "
        f"SELECT func_name, status, CAST({slot} AS {kind}), sum(n) FROM ({rows}) AS d "
        "GROUP BY func_name, status HAVING sum(n) <> 0 ORDER BY func_name, status "
        "ON CONFLICT (func_name, status, slot) DO UPDATE "
        f"SET n = {table}.n + excluded.n"
    )


def _assignments(
    q: Any,
    shape: Shape,
    *,
    target: str,
    prev_status: str,
    status: str = ":p_status",
    values: str = "v",
    stamp: str = ":p_updated_at",
) -> list[str]:
    """The ``SET`` list of a grouped transition: status, ``updated_at``, the shape's
    fields from ``values`` (the alias of the rows of values), the key and owner indexes.
    ``target`` qualifies the updated columns (MySQL's ``UPDATE ... JOIN`` needs ``t.``);
    ``status`` and ``stamp`` are the new status and ``updated_at`` (parameters or SQL)."""
    sets = [
        f"{target}{q.quote('prev_status')} = {prev_status}",
        f"{target}{q.quote('status')} = {status}",
        f"{target}{q.quote('updated_at')} = {stamp}",
    ]
    if shape.release_key:
        sets.append(f"{target}{q.quote('active_key')} = NULL")
    sets.extend(f"{target}{q.quote(name)} = {values}.{q.quote(name)}" for name in shape.fields)
    if shape.active:
        source = values if "owner" in shape.fields else "t"
        sets.append(f"{target}{q.quote('active_owner')} = {source}.{q.quote('owner')}")
    else:
        sets.append(f"{target}{q.quote('active_owner')} = NULL")
    return sets
