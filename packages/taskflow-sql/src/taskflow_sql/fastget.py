"""``get(task_id)`` without per-call overhead: one compiled statement, one hop.

``get`` is the call an application makes most (a status page polling a task), so it
skips the generic path (a pooled SQLAlchemy connection, ``BEGIN``, two statements each
built, keyed and looked up in the compiled cache, ``COMMIT``):

* SQLite: the task and its logs are read in one read transaction on a stdlib
  ``sqlite3`` connection of the event loop's own thread. A point read by primary key
  in a WAL database takes tens of microseconds — less than handing it to a thread and
  back (~0.1 ms on a 2-core machine). That connection never waits: it has no busy
  timeout, and a read that finds the database locked (another process in exclusive
  locking mode, a WAL file being recovered) runs again on a reader thread whose
  connection waits the backend's busy timeout.
* PostgreSQL (asyncpg): one statement returns the task and its logs (``json_agg``),
  sent straight to the pooled connection's driver, which keeps it prepared — one round
  trip, no ``BEGIN``/``COMMIT`` (a single statement reads one snapshot).

The SQL of both is compiled once from SQLAlchemy Core constructs; values are converted
with the columns' own result processors, so records read here equal the generic path's.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import timezone
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, func, literal_column, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.engine import Dialect

from fastapi_taskflow.isotime import parse_iso
from fastapi_taskflow.models import LogEntry, TaskRecord

from .context import SQLContext
from .engine import SQLiteSettings
from .errors import sqlite_locked
from .executor import connect, release
from .pg_kept import KeptConnection
from .rows import record_columns, row_to_log, row_to_record
from .schema import Tables

__all__ = ["PostgresGet", "SQLiteReader"]

Processor = Callable[[Any], Any] | None


def _processors(columns: list[Any], dialect: Dialect) -> list[tuple[str, Processor]]:
    """Each column's result processor for ``dialect`` (None: the driver's value is kept).

    A processor that needs the driver's column type (PostgreSQL numerics, whose asyncpg
    values are already Python floats) is left out.
    """
    found: list[tuple[str, Processor]] = []
    for column in columns:
        try:
            process = column.type.dialect_impl(dialect).result_processor(dialect, None)
        except TypeError:
            process = None
        found.append((column.name, process))
    return found


def _convert(row: tuple[Any, ...], processors: list[tuple[str, Processor]]) -> dict[str, Any]:
    return {
        name: (value if process is None or value is None else process(value))
        for (name, process), value in zip(processors, row, strict=False)
    }


@lru_cache(maxsize=16)
def _sqlite_reads(
    tables: Tables,
) -> tuple[str, str, list[tuple[str, Processor]], list[tuple[str, Processor]]]:
    """The SQL of a task's row and of its log lines, and their columns' processors
    (compiled once per set of tables: a reader is made per event loop)."""
    dialect: Dialect = sqlite.dialect()
    columns = record_columns(tables)
    task = select(*columns).where(tables.tasks.c.task_id == bindparam("id"))
    logs = tables.logs
    log_columns = [logs.c.timestamp, logs.c.level, logs.c.message, logs.c.attempt]
    log_columns.append(logs.c.extra)
    entries = select(*log_columns).where(logs.c.task_id == bindparam("id"))
    entries = entries.order_by(logs.c.id)
    return (
        str(task.compile(dialect=dialect)),
        str(entries.compile(dialect=dialect)),
        _processors(columns, dialect),
        _processors(log_columns, dialect),
    )


class SQLiteReader:
    """Runs ``get`` with stdlib ``sqlite3`` connections to the file: on the event loop's
    thread, or on a reader thread when the database is locked.

    Args:
        database: the database file.
        tables: the backend's tables.
        settings: the pragmas (its busy timeout applies to readers).
    """

    def __init__(self, database: str, tables: Tables, settings: SQLiteSettings) -> None:
        self._task_sql, self._logs_sql, self._task_proc, self._log_proc = _sqlite_reads(tables)
        self._database = database
        self._timeout = settings.busy_timeout_ms / 1000
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="taskflow-sqlite-r")

    def _conn(self, *, waits: bool) -> sqlite3.Connection:
        """This thread's connection: ``waits`` for a lock up to the busy timeout, or
        not at all (the event loop's)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self._database,
                timeout=self._timeout if waits else 0,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA query_only = 1")
            self._local.conn = conn
            self._conns.append(conn)
        return conn

    def _get(self, task_id: str, *, waits: bool = True) -> TaskRecord | None:
        conn = self._conn(waits=waits)
        conn.execute("BEGIN")
        try:
            row = conn.execute(self._task_sql, (task_id,)).fetchone()
            if row is None:
                return None
            logs = conn.execute(self._logs_sql, (task_id,)).fetchall()
        finally:
            conn.execute("COMMIT")
        record = row_to_record(_convert(row, self._task_proc))
        if record is not None:
            found = (row_to_log(_convert(entry, self._log_proc)) for entry in logs)
            record.logs = [entry for entry in found if entry is not None]
        return record

    async def get(self, task_id: str) -> TaskRecord | None:
        """Read the task and its logs: here, or on the reader thread if the database
        is locked."""
        try:
            return self._get(task_id, waits=False)
        except sqlite3.OperationalError as exc:
            if not sqlite_locked(exc):
                raise
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._get, task_id)

    def close(self) -> None:
        """Stop the thread and close its connection."""
        self._thread.shutdown(wait=True)
        for conn in self._conns:
            conn.close()
        self._conns.clear()


@lru_cache(maxsize=16)
def _postgres_read(tables: Tables) -> tuple[str, list[tuple[str, Processor]]]:
    """The SQL of a task's row with its log lines, and its columns' processors
    (compiled once per set of tables: a reader is made per event loop)."""
    dialect: Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    columns = record_columns(tables)
    tasks, logs = tables.tasks, tables.logs
    entry = func.json_build_array(
        logs.c.timestamp, logs.c.level, logs.c.message, logs.c.attempt, logs.c.extra
    )
    aggregated = (
        select(
            func.coalesce(
                func.json_agg(aggregate_order_by(entry, logs.c.id)),
                literal_column("'[]'::json"),
            )
        )
        .where(logs.c.task_id == tasks.c.task_id)
        .scalar_subquery()
    )
    stmt = select(*columns, aggregated.label("logs")).where(tasks.c.task_id == literal_column("$1"))
    return str(stmt.compile(dialect=dialect)), _processors(columns, dialect)


class PostgresGet:
    """The task and its logs in one prepared statement on the asyncpg driver.

    It runs on the pooled connection the backend keeps checked out for its fast paths
    (:class:`~taskflow_sql.pg_kept.KeptConnection`; a ``get`` that finds it busy takes
    another from the pool). A kept connection that fails is dropped and the call
    retried once on a fresh one from the pool, so a server restart costs no failed read.
    """

    def __init__(self, tables: Tables, kept: KeptConnection) -> None:
        self._kept = kept
        self.sql, self._proc = _postgres_read(tables)

    async def fetch(self, ctx: SQLContext, task_id: str) -> TaskRecord | None:
        """Read the task with its logs (raises the driver's errors)."""
        try:
            async with self._kept.driver() as driver:
                return self.record(await driver.fetchrow(self.sql, task_id))
        except Exception:
            pass  # the connection was dropped: a read is safe to run again, below
        conn = await connect(ctx, write=False)
        try:
            fresh: Any = (await conn.get_raw_connection()).driver_connection
            return self.record(await fresh.fetchrow(self.sql, task_id))
        finally:
            await release(conn)

    def record(self, row: Mapping[str, Any] | None) -> TaskRecord | None:
        """Build the record (with its logs) from the statement's row."""
        if row is None:
            return None
        values = _convert(tuple(row.values()), self._proc)
        record = row_to_record(values)
        if record is None:
            return None
        logs = row["logs"]  # SQLAlchemy's asyncpg setup decodes json; a bare one does not
        found = (_log(item) for item in (json.loads(logs) if isinstance(logs, str) else logs))
        record.logs = [entry for entry in found if entry is not None]
        return record


def _log(item: list[Any]) -> LogEntry | None:
    moment = parse_iso(item[0])
    moment = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment
    values = {
        "timestamp": moment.astimezone(timezone.utc),
        "level": item[1],
        "message": item[2],
        "attempt": item[3],
        "extra": item[4],
    }
    return row_to_log(values)
