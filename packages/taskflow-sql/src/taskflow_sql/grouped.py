"""Group commit of transitions: many compare-and-sets of one shape in one statement.

:meth:`Store.transition_many` receives the starts and finishes of many tasks at once.
Items with the same *shape* (expected statuses, new status, fields set) become one
statement over a list of rows, and all the statements of a call run in one
transaction:

* PostgreSQL and SQLite (≥ 3.33): ``WITH v(task_id, …) AS (VALUES …) UPDATE tasks AS t
  SET … FROM v WHERE t.task_id = v.task_id AND t.status IN (…) RETURNING t.…`` — the
  row lock (PostgreSQL) or the single writer (SQLite) makes each row's compare-and-set
  atomic, and ``prev_status`` is saved by the same statement for the counters.
* MySQL/MariaDB (no ``UPDATE … RETURNING``): one ``SELECT … FOR UPDATE`` of every id
  (ordered, so concurrent batches lock in the same order), the winners decided from it,
  one ``UPDATE tasks AS t JOIN (SELECT … UNION ALL …) AS v`` per shape, and one
  read-back ``SELECT``.

Row lists are padded to a power of two (rows with a NULL id match nothing), so each
shape compiles to a handful of statements that SQLAlchemy and the drivers then reuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Table, bindparam, select, text
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.selectable import TextualSelect

from fastapi_taskflow.models import (
    ACTIVE_STATUSES,
    KEY_RELEASING_STATUSES,
    TaskRecord,
    TaskStatus,
    Transition,
)

from .context import Tx
from .rows import record_columns, row_to_record, update_values

__all__ = ["Shape", "run_transitions"]

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
    def active(self) -> bool:
        """The new status is PENDING or RUNNING (the owner stays visible)."""
        return TaskStatus(self.new) in ACTIVE_STATUSES


def _padded(n: int) -> int:
    size = 1
    while size < n:
        size *= 2
    return size


def _groups(
    transitions: Sequence[Transition],
) -> dict[Shape, list[tuple[int, dict[str, Any]]]]:
    groups: dict[Shape, list[tuple[int, dict[str, Any]]]] = {}
    for index, item in enumerate(transitions):
        expected = tuple(sorted({TaskStatus(s).value for s in item.expected}))
        if not expected:
            continue
        values = update_values(item.update.changes()) if item.update is not None else {}
        shape = Shape(expected, TaskStatus(item.new).value, tuple(sorted(values)))
        values["task_id"] = item.task_id
        groups.setdefault(shape, []).append((index, values))
    return groups


async def run_transitions(
    tx: Tx, transitions: Sequence[Transition], now: Any
) -> list[TaskRecord | None]:
    """Apply ``transitions`` inside ``tx``; one result per item, in order."""
    results: list[TaskRecord | None] = [None] * len(transitions)
    groups = _groups(transitions)
    if not groups:
        return results
    if tx.ctx.kind == "mysql":
        await _mysql(tx, groups, now, results)
        return results
    columns = tuple(record_columns(tx.ctx.tables))
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
                record = row_to_record(row._mapping)
                tx.move(row.func_name, row.task_id, row.prev_status, shape.new)
                results[where[row.task_id]] = record
    return results


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
    sets = [
        f"{q.quote('prev_status')} = t.{q.quote('status')}",
        f"{q.quote('status')} = :p_status",
        f"{q.quote('updated_at')} = :p_updated_at",
    ]
    if shape.release_key:
        sets.append(f"{q.quote('active_key')} = NULL")
    sets.extend(f"{q.quote(name)} = v.{q.quote(name)}" for name in shape.fields)
    if shape.active:
        source = "v" if "owner" in shape.fields else "t"
        sets.append(f"{q.quote('active_owner')} = {source}.{q.quote('owner')}")
    else:
        sets.append(f"{q.quote('active_owner')} = NULL")
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
    results: list[TaskRecord | None],
) -> None:
    """MySQL/MariaDB: lock every row, decide the winners, update per shape, read back."""
    tasks = tx.ctx.tables.tasks
    ids = sorted(values["task_id"] for items in groups.values() for _, values in items)
    found: dict[str, tuple[str, str]] = {}
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        rows = await tx.conn.execute(
            select(tasks.c.task_id, tasks.c.status, tasks.c.func_name)
            .where(tasks.c.task_id.in_(part))
            .order_by(tasks.c.task_id)
            .with_for_update()
        )
        found.update({row.task_id: (row.status, row.func_name) for row in rows})
    won: dict[str, int] = {}
    for shape, items in groups.items():
        winners = []
        for index, values in items:
            current = found.get(values["task_id"])
            if current is None or current[0] not in shape.expected:
                continue
            values["prev_status"] = current[0]
            winners.append(values)
            won[values["task_id"]] = index
            tx.move(current[1], values["task_id"], current[0], shape.new)
        for start in range(0, len(winners), _MAX_ROWS):
            part = winners[start : start + _MAX_ROWS]
            size = _padded(len(part))
            stmt = _mysql_update(tasks, shape, size)
            params: dict[str, Any] = {"p_status": shape.new, "p_updated_at": now}
            for i in range(size):
                values = part[i] if i < len(part) else {}
                for name in ("task_id", "prev_status", *shape.fields):
                    params[f"r{i}_{name}"] = values.get(name)
            await tx.conn.execute(stmt, params)
    if not won:
        return
    columns = record_columns(tx.ctx.tables)
    order = sorted(won)
    for start in range(0, len(order), 500):
        part = order[start : start + 500]
        rows = await tx.conn.execute(select(*columns).where(tasks.c.task_id.in_(part)))
        for row in rows:
            results[won[row.task_id]] = row_to_record(row._mapping)


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
    sets = [
        f"t.{q.quote('prev_status')} = v.{q.quote('prev_status')}",
        f"t.{q.quote('status')} = :p_status",
        f"t.{q.quote('updated_at')} = :p_updated_at",
    ]
    if shape.release_key:
        sets.append(f"t.{q.quote('active_key')} = NULL")
    sets.extend(f"t.{q.quote(name)} = v.{q.quote(name)}" for name in shape.fields)
    if shape.active:
        source = "v" if "owner" in shape.fields else "t"
        sets.append(f"t.{q.quote('active_owner')} = {source}.{q.quote('owner')}")
    else:
        sets.append(f"t.{q.quote('active_owner')} = NULL")
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
