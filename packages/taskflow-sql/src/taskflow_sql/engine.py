"""Creating and configuring SQLAlchemy async engines for the backend."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import ArgumentError, InvalidRequestError, NoSuchModuleError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from fastapi_taskflow.errors import BackendURLError
from fastapi_taskflow.redaction import mask_secrets

from .pool_log import POOL_LOGGING_NAME, quiet_cancelled_resets
from .urls import SQLTarget

__all__ = ["SQLiteSettings", "configure_sqlite", "make_engine"]

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


class SQLiteSettings:
    """The pragmas set on every SQLite connection.

    Args:
        busy_timeout: seconds a connection waits for another process's write lock.
        synchronous: ``NORMAL`` (default: in WAL mode a commit is durable against a
            crash or kill of the process, and the last transactions may be lost, never
            corrupted, on power loss or an OS crash), ``FULL`` (every commit also
            survives power loss: one more fsync per group commit) or ``EXTRA``.
    """

    def __init__(self, *, busy_timeout: float = 10.0, synchronous: str = "NORMAL") -> None:
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ValueError(f"sqlite synchronous must be one of {_SYNCHRONOUS}")
        self.busy_timeout_ms = int(busy_timeout * 1000)
        self.synchronous = synchronous.upper()


def make_engine(target: SQLTarget, engine_options: dict[str, Any] | None = None) -> AsyncEngine:
    """Create the engine for a parsed URL.

    MySQL/MariaDB sessions use READ COMMITTED (what ``SKIP LOCKED`` claims and
    insert-if-absent expect); pools are recycled hourly against server timeouts. The
    pool is named ``taskflow`` (see :mod:`taskflow_sql.pool_log`). The
    pool's size comes from ``?pool_size=&max_overflow=`` in the URL, else SQLAlchemy's
    defaults (5 + 10 overflow: on a small machine more connections only add contention,
    as every write is one statement and round trip), and ``engine_options`` wins.

    Raises:
        BackendURLError: the driver is not installed or is not an async driver.
    """
    options: dict[str, Any] = {"pool_logging_name": POOL_LOGGING_NAME}
    if target.kind == "mysql":
        options.update(isolation_level="READ COMMITTED", pool_recycle=3600)
    elif target.kind == "postgresql":
        options.update(pool_recycle=3600)
    if target.kind != "sqlite":  # ?pool_size=…&max_overflow=… in the URL
        for name in ("pool_size", "max_overflow"):
            if name in target.options:
                options[name] = int(target.options[name])
    options.update(engine_options or {})
    try:
        engine = create_async_engine(target.url, **options)
    except (NoSuchModuleError, ArgumentError, InvalidRequestError, ImportError) as exc:
        extra = {"sqlite": "sqlite", "postgresql": "postgres", "mysql": "mysql"}[target.kind]
        raise BackendURLError(
            f"cannot use {target.url.drivername!r}: {mask_secrets(str(exc))}. Use an async "
            f'driver; the default one is installed with: pip install "taskflow-core[{extra}]"'
        ) from exc
    quiet_cancelled_resets(engine)
    return engine


def configure_sqlite(engine: AsyncEngine | Engine, settings: SQLiteSettings) -> None:
    """Set WAL, busy_timeout and synchronous on every connection; control BEGIN.

    The driver's own implicit transactions are turned off; SQLAlchemy's ``begin`` emits
    ``BEGIN IMMEDIATE`` on connections marked ``taskflow_write`` (so a writer takes the
    write lock up front and never fails half way with "database is locked") and a plain
    deferred ``BEGIN`` on readers, which WAL lets run beside the writer. A connection
    marked ``taskflow_write="joined"`` (the SQLite writer's) emits nothing: its
    transaction was begun on the driver before SQLAlchemy's autobegin.
    """
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    if getattr(sync_engine, "_taskflow_sqlite", False):
        return
    sync_engine._taskflow_sqlite = True  # type: ignore[attr-defined]

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {settings.busy_timeout_ms}")
        _switch_to_wal(cursor, settings.busy_timeout_ms / 1000)
        cursor.execute(f"PRAGMA synchronous = {settings.synchronous}")
        cursor.close()

    def on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get("taskflow_write")
        if write == "joined":
            return  # the SQLite writer began this transaction on the driver itself
        if write:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    event.listen(sync_engine, "connect", on_connect)
    event.listen(sync_engine, "begin", on_begin)


def _switch_to_wal(cursor: Any, patience: float) -> None:
    """Set WAL mode, waiting out other connections.

    Changing the journal mode needs an exclusive lock, and SQLite answers "database is
    locked" at once (without its busy handler) while another connection is opening the
    same new file. Several processes starting together hit that, so retry for as long
    as ``busy_timeout`` would have waited.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except Exception as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
