"""Errors of the SQL backend and the wrapping of driver exceptions.

Every driver exception that leaves the backend is one of taskflow's errors, with the
driver's exception kept as ``__cause__``:

* :class:`~fastapi_taskflow.errors.BackendUnavailableError` when the database cannot be
  reached (connection refused, dropped, unknown database, SQLite file not openable or
  locked for longer than ``busy_timeout``);
* :class:`SQLBackendError` for anything else the database refused.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from fastapi_taskflow.errors import BackendUnavailableError, TaskflowError

__all__ = [
    "SQLBackendError",
    "SchemaVersionError",
    "is_retryable",
    "unavailable",
    "wrap_error",
]

# MySQL client/server error numbers that mean "the server is not there (any more)".
_MYSQL_DISCONNECTS = frozenset({1040, 1045, 1049, 1053, 2002, 2003, 2005, 2006, 2013, 2055})
_MYSQL_RETRYABLE = frozenset({1205, 1213})  # lock wait timeout, deadlock
_PG_RETRYABLE = frozenset({"40001", "40P01"})  # serialization failure, deadlock
_SQLITE_UNAVAILABLE = ("unable to open database", "database is locked", "disk i/o error")


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


def unavailable(what: str, exc: BaseException) -> BackendUnavailableError:
    """Build the error for an unreachable database, naming ``what`` was being done."""
    return BackendUnavailableError(
        f"the SQL database is unavailable while {what}: {_short(exc)}. Check that the "
        "server is running and the URL (host, port, database, credentials) is right; "
        "nothing was written."
    )


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc) or type(exc).__name__
    return text.splitlines()[0][:300]


def _driver_code(exc: BaseException) -> object:
    orig = getattr(exc, "orig", exc)
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate:
        return str(sqlstate)
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return None


def is_unavailable(exc: BaseException) -> bool:
    """Return True when ``exc`` means the database cannot be reached."""
    if isinstance(exc, (OSError, TimeoutError)):
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


def is_retryable(exc: BaseException) -> bool:
    """Return True for a deadlock or serialization failure worth retrying."""
    if not isinstance(exc, DBAPIError):
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
    if isinstance(exc, SQLAlchemyError):
        return SQLBackendError(f"the SQL database refused {what}: {_short(exc)}")
    return SQLBackendError(f"unexpected error while {what}: {_short(exc)}")
