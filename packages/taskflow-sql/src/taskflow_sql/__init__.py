"""taskflow-sql: durable taskflow backends on SQLite, PostgreSQL and MySQL/MariaDB.

``TaskManager(backend="sqlite:///tasks.db")`` (or ``postgresql://…``, ``mysql://…``)
finds :func:`from_url` through the ``taskflow.backends`` entry points.
``SQLBackend(engine)`` shares an application's existing ``AsyncEngine``.
"""

from __future__ import annotations

from fastapi_taskflow.clock import Clock

from .backend import SQLBackend
from .bulk import bulk_insert_tasks
from .errors import SchemaVersionError, SQLBackendError
from .migrations import SCHEMA_VERSION
from .oversized import ValueTooLargeError
from .schema import DEFAULT_PREFIX

__all__ = [
    "DEFAULT_PREFIX",
    "SCHEMA_VERSION",
    "SQLBackend",
    "SQLBackendError",
    "SchemaVersionError",
    "ValueTooLargeError",
    "bulk_insert_tasks",
    "from_url",
]

__version__ = "0.1.0"


def from_url(url: str, *, clock: Clock) -> SQLBackend:
    """Build an unopened backend for a ``sqlite://``, ``postgresql://``, ``postgres://``,
    ``mysql://`` or ``mariadb://`` URL (the ``taskflow.backends`` entry point).

    Raises:
        BackendURLError: the URL is malformed or names an unsupported database.
    """
    return SQLBackend(url, clock=clock)
