"""``SQLBackend``: the Store and Backend protocols on one SQLAlchemy async engine."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from fastapi_taskflow.clock import Clock, SystemClock
from fastapi_taskflow.errors import BackendNotOpenError, BackendURLError
from fastapi_taskflow.redaction import hide_hosts_of, mask_secrets

from .combined import SQLCombinedWrite
from .context import SQLContext
from .engine import SQLiteSettings, configure_sqlite, make_engine
from .errors import unavailable
from .events import SQLEvents
from .executor import Executor
from .fastget import PostgresGet, SQLiteReader
from .instances import SQLInstances
from .locks import SQLLocks
from .migrations import migrate
from .oversized import read_max_packet
from .pg_kept import KeptConnection
from .pg_writes import PostgresWrites
from .queries import SQLQueries
from .queue import SQLQueue
from .readers import SQLReaders
from .schema import DEFAULT_PREFIX, Tables, build_tables
from .urls import SQLTarget, kind_of, parse_url

__all__ = ["SQLBackend"]


def _check_sqlite_directory(target: SQLTarget) -> None:
    """Fail early, with a clear message, when a SQLite file's directory is missing."""
    if target.kind != "sqlite" or not target.url.database:
        return
    folder = Path(target.url.database).expanduser().absolute().parent
    if not folder.is_dir():
        missing = FileNotFoundError(f"no such directory: {folder}")
        raise unavailable(f"opening {target.url.database!r}", missing) from missing


class SQLBackend(
    SQLCombinedWrite, SQLQueries, SQLQueue, SQLInstances, SQLLocks, SQLReaders, SQLEvents
):
    """Durable tasks in SQLite, PostgreSQL or MySQL/MariaDB.

    ``SQLBackend("sqlite:///tasks.db")``, ``SQLBackend("postgresql://user@host/db")``,
    or ``SQLBackend(engine)`` with an existing ``AsyncEngine`` so the app and taskflow
    share one pool (taskflow then never disposes it). Nothing connects until
    :meth:`open`, which also creates or upgrades the schema.

    Args:
        url_or_engine: a backend URL (see :func:`taskflow_sql.urls.parse_url`) or an
            ``AsyncEngine``.
        table_prefix: prefix of every table name (default ``taskflow_``), so several
            stores can share a database; a ``?table_prefix=`` in the URL overrides it.
        schema: PostgreSQL schema holding the tables (created if missing); None: the
            connection's default (``public``).
        clock: where every timestamp comes from (never the database's ``NOW()``).
        engine_options: extra ``create_async_engine`` keywords (pool size, echo, …);
            ignored when an engine is passed.
        sqlite_busy_timeout: seconds a SQLite connection waits for the write lock.
        sqlite_synchronous: SQLite ``PRAGMA synchronous``: ``NORMAL`` (default; WAL keeps
            every commit through a process crash, power loss may drop the last ones) or
            ``FULL`` (commits survive power loss too); a ``?synchronous=`` in the URL
            overrides it.
        sqlite_batch_max: most writes grouped into one SQLite transaction.
        sqlite_batch_window: seconds the SQLite writer waits to fill a batch (0: none).
        counter_slots: rows per stats counter on PostgreSQL/MySQL (spreads row locks).
        event_poll_interval: seconds between polls of the events table (SQLite, MySQL).
        event_retention: how many newest event rows are kept for pollers.
    """

    durable = True
    concurrent_writes = 1
    """One group-commit write in flight at a time (see
    ``fastapi_taskflow.protocols.TaskBackend``). SQLite has a single writer; on
    PostgreSQL and MySQL a second write in flight made the durable benchmark slower
    (it halves each write's batch and takes a second connection, off the fast path)."""

    def __init__(
        self,
        url_or_engine: str | AsyncEngine,
        *,
        table_prefix: str = DEFAULT_PREFIX,
        schema: str | None = None,
        clock: Clock | None = None,
        engine_options: dict[str, Any] | None = None,
        sqlite_busy_timeout: float = 10.0,
        sqlite_synchronous: str = "NORMAL",
        sqlite_batch_max: int = 512,
        sqlite_batch_window: float = 0.0,
        counter_slots: int = 16,
        event_poll_interval: float = 0.05,
        event_retention: int = 10_000,
    ) -> None:
        self.clock = clock or SystemClock()
        self._settings: dict[str, Any] = {
            "table_prefix": table_prefix,
            "schema": schema,
            "engine_options": engine_options,
            "sqlite_busy_timeout": sqlite_busy_timeout,
            "sqlite_synchronous": sqlite_synchronous,
            "sqlite_batch_max": sqlite_batch_max,
            "sqlite_batch_window": sqlite_batch_window,
            "counter_slots": counter_slots,
            "event_poll_interval": event_poll_interval,
            "event_retention": event_retention,
        }
        if isinstance(url_or_engine, AsyncEngine):
            self._target: SQLTarget | None = None
            self._url = url_or_engine.url.render_as_string(hide_password=False)
            hide_hosts_of(self._url)
            self._given_engine: AsyncEngine | None = url_or_engine
            kind = kind_of(url_or_engine.dialect.name)
        else:
            self._target = parse_url(url_or_engine)
            self._url = url_or_engine
            self._given_engine = None
            kind = self._target.kind
            table_prefix = self._target.options.get("table_prefix", table_prefix)
            schema = self._target.options.get("schema", schema)
            sqlite_synchronous = self._target.options.get("synchronous", sqlite_synchronous)
        self._sqlite = SQLiteSettings(
            busy_timeout=sqlite_busy_timeout, synchronous=sqlite_synchronous
        )
        if schema is not None and kind != "postgresql":
            raise BackendURLError("'schema' is a PostgreSQL option; use table_prefix instead")
        self.tables: Tables = build_tables(table_prefix, schema)
        self.kind = kind
        self._counter_slots = 1 if kind == "sqlite" else max(1, counter_slots)
        self._poll_interval = event_poll_interval
        self._event_retention = event_retention
        self._published = 0
        self._wakers: dict[asyncio.Event, str | None] = {}
        self._opened = False
        self._opening = asyncio.Lock()
        """Held by the one ``open()`` at work: callers at the same time wait for it."""
        self._closed = False
        self._owns_engine = self._given_engine is None
        self._ctx_value: SQLContext | None = None
        self._pg_kept: KeptConnection | None = None
        self._exec_value: Executor | None = None

    @property
    def _ctx(self) -> SQLContext:  # type: ignore[override]
        if self._ctx_value is None:
            raise self._not_open()
        return self._ctx_value

    @property
    def _exec(self) -> Executor:  # type: ignore[override]
        if self._exec_value is None:
            raise self._not_open()
        return self._exec_value

    def _not_open(self) -> BackendNotOpenError:
        if self._closed:
            return BackendNotOpenError("this SQL backend was closed; create a new one or fork()")
        return BackendNotOpenError(
            "the SQL backend is not open: call 'await backend.open()' first "
            "(TaskManager does this for you)"
        )

    @property
    def engine(self) -> AsyncEngine:
        """The engine in use (None-safe only after :meth:`open`)."""
        return self._ctx.engine

    async def open(self) -> None:
        """Connect, create or upgrade the schema, start the SQLite writer. Idempotent,
        also when called again before the first call is done: later callers wait for
        it, and open again only if it failed.

        Raises:
            BackendUnavailableError: the database cannot be reached.
            SchemaVersionError: the database holds a newer schema than this release.
        """
        if self._opened:
            return
        async with self._opening:
            if not self._opened:
                await self._open()

    async def _open(self) -> None:
        if self._closed:
            raise self._not_open()
        if self._given_engine is not None:
            engine = self._given_engine
        else:
            assert self._target is not None
            _check_sqlite_directory(self._target)
            engine = make_engine(self._target, self._settings["engine_options"])
        if self.kind == "sqlite":
            configure_sqlite(engine, self._sqlite)
        ctx = SQLContext(
            engine=engine,
            kind=self.kind,
            tables=self.tables,
            clock=self.clock,
            counter_slots=self._counter_slots,
        )
        try:
            await migrate(ctx)
            if ctx.kind == "mysql":
                ctx.max_packet = await read_max_packet(ctx)
        except BaseException:
            if self._owns_engine:
                await engine.dispose()
            raise
        self._ctx_value = ctx
        self._exec_value = Executor(
            ctx,
            sqlite=self._sqlite,
            max_batch=self._settings["sqlite_batch_max"],
            window=self._settings["sqlite_batch_window"],
        )
        self._exec_value.start()
        try:
            self._start_fast_get(engine)
        except BaseException:  # nothing of this open() is left running
            await self._exec_value.stop()
            self._exec_value = self._ctx_value = None
            if self._owns_engine:
                await engine.dispose()
            raise
        self._opened = True

    def _start_fast_get(self, engine: AsyncEngine) -> None:
        """Set up :mod:`taskflow_sql.fastget` (and on asyncpg :mod:`taskflow_sql.pg_writes`)
        where the database and driver allow it."""
        url = engine.url
        if self.kind == "sqlite" and url.database and not url.query:
            self._reader = SQLiteReader(url.database, self.tables, self._sqlite)
        elif self.kind == "postgresql" and engine.dialect.driver == "asyncpg":
            self._pg_kept = KeptConnection(self._ctx)
            self._pg_get = PostgresGet(self.tables, self._pg_kept)
            self._pg_write = PostgresWrites(self._ctx, self._pg_kept)

    async def close(self) -> None:
        """Finish queued SQLite writes and release the pool (unless it was passed in).

        Idempotent; the backend cannot be used afterwards.
        """
        if self._closed:
            return
        self._closed = True
        if self._exec_value is not None:
            await self._exec_value.stop()
        if self._reader is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._reader.close)
        if self._pg_kept is not None:
            with contextlib.suppress(Exception):
                await self._pg_kept.close()
        if self._ctx_value is not None and self._owns_engine:
            await self._ctx_value.engine.dispose()
        # From here every call (and open()) raises BackendNotOpenError.
        self._ctx_value, self._exec_value, self._opened = None, None, False
        self._reader = self._pg_get = self._pg_kept = None

    def fork(self) -> SQLBackend:
        """Return an unopened backend on the same database with its own engine and pool.

        Same URL, options, table prefix, schema and clock. A backend built on a passed-in
        ``AsyncEngine`` forks by creating a new engine from that engine's URL.
        """
        settings = dict(self._settings)
        settings["table_prefix"] = self.tables.prefix
        settings["schema"] = self.tables.schema
        return SQLBackend(self._url, clock=self.clock, **settings)

    def __repr__(self) -> str:
        where = mask_secrets(self._url)
        return f"SQLBackend({self.kind}, {where!r}, prefix={self.tables.prefix!r})"
