"""Errors of the SQL backend and the wrapping of driver exceptions.

Every driver exception that leaves the backend is one of taskflow's errors, with the
driver's exception kept as ``__cause__``:

* :class:`~fastapi_taskflow.errors.BackendUnavailableError` when the database cannot be
  reached (connection refused, dropped, unknown database, SQLite file not openable or
  locked for longer than ``busy_timeout``);
* :class:`SQLBackendError` for anything else the database refused.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from fastapi_taskflow.errors import BackendUnavailableError, BackendURLError, TaskflowError
from fastapi_taskflow.redaction import mask_secrets

from .urls import TASKFLOW_OPTIONS

__all__ = [
    "SQLBackendError",
    "SchemaVersionError",
    "is_retryable",
    "sqlite_locked",
    "unavailable",
    "unknown_option",
    "wrap_error",
]

# MySQL client/server error numbers that mean "the server is not there (any more)".
_MYSQL_DISCONNECTS = frozenset({1040, 1045, 1049, 1053, 2002, 2003, 2005, 2006, 2013, 2055})
_MYSQL_RETRYABLE = frozenset({1205, 1213})  # lock wait timeout, deadlock
_PG_RETRYABLE = frozenset({"40001", "40P01"})  # serialization failure, deadlock
_SQLITE_UNAVAILABLE = ("unable to open database", "database is locked", "disk i/o error")
_SQLITE_BUSY_OR_LOCKED = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED (named in sqlite3 from 3.11)


def sqlite_locked(exc: sqlite3.OperationalError) -> bool:
    """Whether ``exc`` (the stdlib driver's) says the database was busy or locked by
    another connection: worth waiting for, on a connection that waits."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return code & 0xFF in _SQLITE_BUSY_OR_LOCKED
    return "locked" in str(exc) or "busy" in str(exc)


class SQLBackendError(TaskflowError):
    """The database refused an operation of the SQL backend.

    The driver's exception is the ``__cause__``. This usually means the schema was
    changed by hand or the database user lacks a privilege; the message says which
    statement failed.
    """


class SchemaVersionError(SQLBackendError):
    """The database holds a taskflow schema newer than this ``taskflow-sql`` knows.

    Another instance running a newer release has upgraded the tables. Upgrade
    ``taskflow-sql`` in this deployment too; older code never writes to a newer schema.
    """


_UNEXPECTED_KEYWORD = re.compile(r"unexpected keyword argument '(?P<name>[^']+)'")
# Parameters of a driver's connect() that a URL's parts fill, or that are not options.
_NOT_URL_OPTIONS = {
    *("dsn", "host", "port", "user", "password", "database", "db", "loop", "kwargs"),
    *("connection_class", "record_class", "conv", "cursor_cls", "query_callback"),
    *("password_creator", "auth_plugin_map", "loop"),
}


def unavailable(what: str, exc: BaseException) -> BackendUnavailableError:
    """Build the error for an unreachable database, naming ``what`` was being done."""
    if _is_sqlite_file_problem(exc):
        hint = (
            "Check that the database file's directory exists and that this process may "
            "write to it (the path is the URL's, relative to the working directory)"
        )
    else:
        hint = (
            "Check that the server is running and the URL (host, port, database, "
            "credentials) is right"
        )
    return BackendUnavailableError(
        f"the SQL database is unavailable while {what}: {_short(exc)}. {hint}; nothing was written."
    )


def unknown_option(exc: BaseException, url: URL) -> BackendURLError | None:
    """Return the error for a URL query option the driver refused, if ``exc`` is that.

    A driver's ``connect()`` gets the URL's query options as keyword arguments, so an
    unknown one (a typo such as ``?prefx=``) surfaces as a ``TypeError``; this names
    the option, the URL (password masked, query kept) and the options that are valid.
    """
    match = _UNEXPECTED_KEYWORD.search(str(exc)) if isinstance(exc, TypeError) else None
    if match is None:
        return None
    driver = url.get_driver_name()
    valid = ", ".join(_driver_options(driver)) or f"see the {driver} documentation"
    shown = url.render_as_string(hide_password=False)
    return BackendURLError(
        f"unknown option {match['name']!r} in the backend URL {mask_secrets(shown)!r}. "
        f"taskflow's own options are {', '.join(TASKFLOW_OPTIONS)}; the others go to the "
        f"{driver} driver, which accepts: {valid}."
    )


def _driver_options(driver: str) -> list[str]:
    try:
        connect = importlib.import_module(driver).connect
        names = inspect.signature(connect).parameters
    except (ImportError, AttributeError, TypeError, ValueError):
        return []
    return sorted(name for name in names if name not in _NOT_URL_OPTIONS)


def _is_sqlite_file_problem(exc: BaseException) -> bool:
    if isinstance(exc, FileNotFoundError):
        return True
    orig = getattr(exc, "orig", exc)
    return isinstance(orig, sqlite3.Error)


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc) or type(exc).__name__
    return mask_secrets(text.splitlines()[0][:300])


def _driver_code(exc: BaseException) -> object:
    """The driver's code for ``exc``: MySQL's error number (a server error carries a
    SQLSTATE too, but most share ``HY000``: a lock wait timeout's and a lost
    connection's alike), else the SQLSTATE (PostgreSQL), else None."""
    orig = getattr(exc, "orig", exc)
    args = getattr(orig, "args", ())
    number = args[0] if args and isinstance(args[0], int) else None
    if number is not None and type(orig).__module__.startswith(_MYSQL_DRIVERS):
        return number
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate:
        return str(sqlstate)
    return number


# SQLSTATEs of a connection that is gone or refused (class 08) or a server shutting down.
_PG_GONE = ("08", "57P01", "57P02", "57P03")


_MYSQL_DRIVERS = ("asyncmy", "aiomysql", "pymysql")
_RAW_DRIVERS = ("asyncpg", *_MYSQL_DRIVERS)


def _raw_driver_error(exc: BaseException) -> bool:
    """An exception a driver raised outside SQLAlchemy (the fast paths of the SQLite
    writer, :mod:`taskflow_sql.pg_writes` and :mod:`taskflow_sql.mysql_raw`)."""
    if isinstance(exc, SQLAlchemyError):
        return False
    return isinstance(exc, sqlite3.Error) or type(exc).__module__.startswith(_RAW_DRIVERS)


def _raw_driver_gone(exc: BaseException) -> bool:
    """A raw driver exception that means the database cannot be reached: a PostgreSQL
    SQLSTATE of class 08 or a shutdown, a MySQL client/server "gone" error number or
    interface error, asyncpg's "connection is closed", or SQLite's locked, unopenable
    or failing file."""
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate.startswith(_PG_GONE):
        return True
    if _driver_code(exc) in _MYSQL_DISCONNECTS:
        return True
    if isinstance(exc, sqlite3.Error):
        message = str(exc).lower()
        return any(marker in message for marker in _SQLITE_UNAVAILABLE)
    if type(exc).__name__ == "InterfaceError" and type(exc).__module__.startswith(_MYSQL_DRIVERS):
        return True  # the MySQL drivers' "connection is not usable any more"
    return type(exc).__module__.startswith("asyncpg") and "closed" in str(exc).lower()


def is_unavailable(exc: BaseException) -> bool:
    """Return True when ``exc`` means the database cannot be reached."""
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    if _raw_driver_error(exc) and _raw_driver_gone(exc):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = exc.orig
        if isinstance(orig, sqlite3.Error):
            message = str(orig).lower()
            return any(marker in message for marker in _SQLITE_UNAVAILABLE)
        if _driver_code(exc) in _MYSQL_DISCONNECTS:
            return True
        if isinstance(orig, (OSError, TimeoutError)):
            return True
        return isinstance(exc, InterfaceError) or (
            isinstance(exc, OperationalError) and _driver_code(exc) is None
        )
    return False


T = TypeVar("T")

RETRIES = 5
"""How many times a write is tried in all when it meets a deadlock, a serialization
failure or (within :data:`RETRY_WINDOW`) a lock wait timeout."""

RETRY_WINDOW = 2.0
"""Seconds from a write's first try within which a retryable failure is tried again.

A deadlock or serialization failure is reported at once and is worth another try. A
MySQL lock wait timeout (1205) comes only after the server waited for a lock for
``innodb_lock_wait_timeout`` (50 s by default): a lock held that long is not about to be
released, and trying again would hold the caller for that long each time (five tries:
over four minutes). It is tried again only when the server's wait is set shorter than
this window."""


async def retried(call: Callable[[], Awaitable[T]], *, window: float = RETRY_WINDOW) -> T:
    """Await ``call()``, again (up to :data:`RETRIES` tries in all, with a short backoff)
    while it fails with a deadlock, a serialization failure or a lock wait timeout
    (:func:`is_retryable`) within ``window`` seconds of the first try (see
    :data:`RETRY_WINDOW`)."""
    first_try = time.monotonic()
    for attempt in range(RETRIES):
        try:
            return await call()
        except Exception as exc:
            if (
                attempt + 1 < RETRIES
                and is_retryable(exc)
                and time.monotonic() - first_try < window
            ):
                await asyncio.sleep(0.005 * 2**attempt)
                continue
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def is_retryable(exc: BaseException) -> bool:
    """Return True for a deadlock or serialization failure worth retrying (``exc`` from
    SQLAlchemy, or from a driver used directly: its SQLSTATE or error number says)."""
    if not isinstance(exc, DBAPIError) and not _raw_driver_error(exc):
        return False
    code = _driver_code(exc)
    return code in _PG_RETRYABLE or code in _MYSQL_RETRYABLE


def wrap_error(what: str, exc: BaseException) -> TaskflowError:
    """Translate a driver or SQLAlchemy exception into a taskflow error.

    Args:
        what: what the backend was doing, for the message ("creating a task").
        exc: the exception raised by SQLAlchemy or the driver.
    """
    if isinstance(exc, TaskflowError):
        return exc
    if is_unavailable(exc):
        return unavailable(what, exc)
    if isinstance(exc, SQLAlchemyError) or _raw_driver_error(exc):
        return SQLBackendError(f"the SQL database refused {what}: {_short(exc)}")
    return SQLBackendError(f"unexpected error while {what}: {_short(exc)}")
