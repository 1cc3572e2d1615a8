"""The few statements that differ between SQLite, PostgreSQL and MySQL/MariaDB."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Select, Table
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from .context import Tx
from .mysql_raw import driver_for

__all__ = ["add_counts", "insert_if_absent", "locked", "upsert", "upsert_statement"]

_MYSQL_DUPLICATE = 1062


@lru_cache(maxsize=256)
def _insert_ignore(kind: str, table: Table) -> Any:
    if kind == "mysql":
        return table.insert()
    maker = pg_insert if kind == "postgresql" else sqlite_insert
    return maker(table).on_conflict_do_nothing()


@lru_cache(maxsize=256)
def _upsert(
    kind: str, table: Table, keys: tuple[str, ...], replace: tuple[str, ...], add: tuple[str, ...]
) -> Any:
    if kind == "mysql":
        my = mysql_insert(table)
        changes: dict[str, Any] = {name: my.inserted[name] for name in replace}
        changes.update({name: table.c[name] + my.inserted[name] for name in add})
        return my.on_duplicate_key_update(changes)
    maker = pg_insert if kind == "postgresql" else sqlite_insert
    stmt = maker(table)
    sets: dict[str, Any] = {name: stmt.excluded[name] for name in replace}
    sets.update({name: table.c[name] + stmt.excluded[name] for name in add})
    return stmt.on_conflict_do_update(index_elements=list(keys), set_=sets)


def upsert_statement(
    kind: str, table: Table, keys: tuple[str, ...], replace: tuple[str, ...]
) -> Any:
    """The cached ``INSERT … ON CONFLICT DO UPDATE`` (``ON DUPLICATE KEY UPDATE``) that
    overwrites ``replace`` columns when a row with the same ``keys`` exists."""
    return _upsert(kind, table, keys, replace, ())


async def insert_if_absent(tx: Tx, table: Table, values: Mapping[str, Any]) -> bool:
    """Insert one row unless it violates a unique constraint; True if inserted.

    PostgreSQL and SQLite use ``ON CONFLICT DO NOTHING`` (a failed statement would abort
    a PostgreSQL transaction); MySQL rolls back only the failed statement, so a plain
    INSERT whose duplicate-key error is caught leaves the transaction usable.
    """
    stmt = _insert_ignore(tx.ctx.kind, table)
    if tx.ctx.kind == "mysql":
        try:
            await tx.conn.execute(stmt, dict(values))
        except IntegrityError as exc:
            args = getattr(exc.orig, "args", ())
            if args and args[0] == _MYSQL_DUPLICATE:
                return False
            raise
        return True
    result = await tx.conn.execute(stmt, dict(values))
    return bool(result.rowcount)


async def upsert(
    tx: Tx,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    keys: Sequence[str],
    replace: Sequence[str] = (),
    add: Sequence[str] = (),
) -> None:
    """Insert ``rows``; on a key conflict overwrite ``replace`` and add to ``add`` columns.

    The statement is built once per shape and reused (SQLAlchemy then caches its
    compiled form).

    Args:
        tx: the transaction.
        table: the table.
        rows: the rows (at least one), all with the same columns.
        keys: the columns of the unique key that may conflict (PostgreSQL/SQLite).
        replace: columns set to the new row's value on conflict.
        add: columns incremented by the new row's value on conflict.
    """
    stmt = _upsert(tx.ctx.kind, table, tuple(keys), tuple(replace), tuple(add))
    params = [dict(row) for row in rows]
    await tx.conn.execute(stmt, params if len(params) > 1 else params[0])


async def add_counts(tx: Tx) -> None:
    """Write the transaction's counter changes, in key order (no lock-order deadlocks)."""
    rows = [
        {"func_name": func, "status": status, "slot": slot, "n": delta}
        for (func, status, slot), delta in sorted(tx.deltas.items())
        if delta
    ]
    tx.deltas.clear()
    counters = tx.ctx.tables.counters
    if tx.ctx.kind == "mysql" and rows:
        # The driver sends the rows as one multi-row INSERT … ON DUPLICATE KEY UPDATE,
        # which InnoDB applies row by row in the order given: the same lock order as
        # one statement per row, in one round trip.
        driver = await driver_for(tx)
        if driver is None:
            await upsert(tx, counters, rows, keys=("func_name", "status", "slot"), add=("n",))
            return
        sql = _counter_sql(counters, driver.dialect)
        await driver.execute_many(sql, [tuple(row.values()) for row in rows])
        return
    for row in rows:  # one statement per row keeps the lock order strict
        await upsert(tx, counters, [row], keys=("func_name", "status", "slot"), add=("n",))


def locked(stmt: Select[Any], tx: Tx, *, skip_locked: bool = False) -> Select[Any]:
    """Add ``FOR UPDATE [SKIP LOCKED]`` where the engine has row locks (not SQLite).

    On SQLite the write transaction (``BEGIN IMMEDIATE``) already excludes every other
    writer, which is the equivalent.
    """
    if not tx.ctx.row_locks:
        return stmt
    return stmt.with_for_update(skip_locked=skip_locked)


@lru_cache(maxsize=16)
def _counter_sql(counters: Table, dialect: Any) -> str:
    """The counter upsert of :func:`add_counts` compiled for the MySQL driver, its values
    in the order ``func_name, status, slot, n``."""
    stmt = _upsert("mysql", counters, ("func_name", "status", "slot"), (), ("n",))
    compiled = stmt.compile(dialect=dialect, column_keys=["func_name", "status", "slot", "n"])
    if list(compiled.positiontup or ()) != ["func_name", "status", "slot", "n"]:
        raise AssertionError(f"unexpected order {compiled.positiontup}")  # pragma: no cover
    return str(compiled)
