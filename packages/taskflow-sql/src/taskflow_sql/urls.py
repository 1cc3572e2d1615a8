"""Backend URLs: which database, which async driver, which taskflow options.

``sqlite:///tasks.db``, ``postgresql://…`` / ``postgres://…`` and ``mysql://…`` /
``mariadb://…`` are mapped to SQLAlchemy URLs with the async drivers aiosqlite, asyncpg
and asyncmy. An explicit driver (``postgresql+psycopg://…``, ``mysql+aiomysql://…``) is
kept as given. Some query parameters are taskflow's own and are removed before the URL
reaches SQLAlchemy: ``table_prefix``, ``schema`` (PostgreSQL only), ``synchronous``
(SQLite only: ``normal``, the default, or ``full``/``extra``), and the pool's
``pool_size`` and ``max_overflow`` (PostgreSQL, MySQL).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from fastapi_taskflow.errors import BackendURLError
from fastapi_taskflow.redaction import hide_hosts_of, mask_secrets

__all__ = [
    "DEFAULT_DRIVERS",
    "SQLITE_OPTIONS",
    "SQLITE_SYNCHRONOUS",
    "TASKFLOW_OPTIONS",
    "Kind",
    "SQLTarget",
    "kind_of",
    "parse_url",
]

Kind = Literal["sqlite", "postgresql", "mysql"]
"""The three engine families the backend knows; MariaDB is ``mysql``."""

DEFAULT_DRIVERS: dict[str, tuple[str, str, Kind]] = {
    "sqlite": ("sqlite", "aiosqlite", "sqlite"),
    "postgres": ("postgresql", "asyncpg", "postgresql"),
    "postgresql": ("postgresql", "asyncpg", "postgresql"),
    "mysql": ("mysql", "asyncmy", "mysql"),
    "mariadb": ("mariadb", "asyncmy", "mysql"),
}
"""``scheme -> (SQLAlchemy dialect, default async driver, kind)``."""

TASKFLOW_OPTIONS = ("table_prefix", "schema", "synchronous", "pool_size", "max_overflow")
"""taskflow's own query options, removed before the URL reaches SQLAlchemy."""

SQLITE_SYNCHRONOUS = ("NORMAL", "FULL", "EXTRA")
"""The values of the SQLite ``?synchronous=`` option (``PRAGMA synchronous``)."""

SQLITE_OPTIONS = (
    "cached_statements",
    "check_same_thread",
    "detect_types",
    "isolation_level",
    "timeout",
    "uri",
)
"""The query options SQLAlchemy's SQLite dialect passes on (any option with ``uri=true``).

PostgreSQL and MySQL options go to the driver's ``connect()``, which names an unknown
one when the backend first connects (see :func:`taskflow_sql.errors.unknown_option`)."""


@dataclass(frozen=True)
class SQLTarget:
    """A parsed backend URL.

    Attributes:
        url: the SQLAlchemy URL with an async driver, taskflow options removed.
        kind: the engine family.
        options: taskflow options found in the query string (``table_prefix``, ``schema``,
            ``synchronous``, ``pool_size``, ``max_overflow``).
    """

    url: URL
    kind: Kind
    options: dict[str, str] = field(default_factory=dict)


def kind_of(dialect_name: str) -> Kind:
    """Return the engine family of a SQLAlchemy dialect name.

    Raises:
        BackendURLError: the dialect is none of SQLite, PostgreSQL, MySQL, MariaDB.
    """
    for _scheme, (dialect, _driver, kind) in DEFAULT_DRIVERS.items():
        if dialect == dialect_name:
            return kind
    raise BackendURLError(
        f"taskflow-sql supports SQLite, PostgreSQL, MySQL and MariaDB, not {dialect_name!r}"
    )


def parse_url(url: str) -> SQLTarget:
    """Map a taskflow SQL URL onto a SQLAlchemy async URL.

    Args:
        url: ``sqlite:///path.db``, ``postgresql://user@host/db``, ``mysql://…``,
            ``mariadb://…``, optionally with ``+driver`` and ``?table_prefix=…&schema=…``.

    Raises:
        BackendURLError: the URL is malformed, names another database, is an in-memory
            SQLite database (use ``memory://`` for that), or has an unknown SQLite option.
            Messages show the URL with its password masked.
    """
    if isinstance(url, str):
        hide_hosts_of(url)
    shown = mask_secrets(str(url))
    if not isinstance(url, str) or "://" not in url:
        raise BackendURLError(
            f"malformed SQL backend URL {shown!r}: expected for example 'sqlite:///tasks.db', "
            "'postgresql://user@host/db' or 'mysql://user@host/db'"
        )
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise BackendURLError(
            f"malformed SQL backend URL {shown!r}: {mask_secrets(str(exc))}"
        ) from exc
    scheme = parsed.get_backend_name().lower()
    if scheme not in DEFAULT_DRIVERS:
        raise BackendURLError(
            f"{shown!r} is not a SQL backend URL: use sqlite://, postgresql://, postgres://, "
            "mysql:// or mariadb://"
        )
    dialect, default_driver, kind = DEFAULT_DRIVERS[scheme]
    driver = parsed.get_driver_name() if "+" in parsed.drivername else default_driver
    options = {name: str(parsed.query[name]) for name in TASKFLOW_OPTIONS if name in parsed.query}
    parsed = parsed.difference_update_query(TASKFLOW_OPTIONS)
    parsed = parsed.set(drivername=f"{dialect}+{driver}")
    if kind == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or "mode=memory" in url:
            raise BackendURLError(
                f"{shown!r} is an in-memory SQLite database, which each connection sees "
                "separately; use 'memory://' for an in-process store or a file such as "
                "'sqlite:///tasks.db'"
            )
    elif not parsed.database:
        raise BackendURLError(f"{shown!r} names no database: add it as the path, e.g. '…/tasks'")
    for name in ("pool_size", "max_overflow"):
        if name in options and not options[name].isdigit():
            raise BackendURLError(f"{shown!r}: {name!r} must be a whole number")
    if "schema" in options and kind != "postgresql":
        raise BackendURLError(
            f"{shown!r}: 'schema' is a PostgreSQL option; use 'table_prefix' to separate "
            "several taskflow stores in one database"
        )
    if "synchronous" in options:
        if kind != "sqlite":
            raise BackendURLError(f"{shown!r}: 'synchronous' is a SQLite option")
        if options["synchronous"].upper() not in SQLITE_SYNCHRONOUS:
            raise BackendURLError(
                f"{shown!r}: 'synchronous' must be one of "
                f"{', '.join(v.lower() for v in SQLITE_SYNCHRONOUS)}"
            )
        options["synchronous"] = options["synchronous"].upper()
    if kind == "sqlite" and str(parsed.query.get("uri", "")).lower() not in ("true", "1"):
        unknown = sorted(set(parsed.query) - set(SQLITE_OPTIONS))
        if unknown:
            raise BackendURLError(
                f"unknown option {unknown[0]!r} in the backend URL {shown!r}. taskflow's own "
                f"options are {', '.join(TASKFLOW_OPTIONS[:1] + TASKFLOW_OPTIONS[2:3])}; "
                "SQLite also takes "
                f"{', '.join(SQLITE_OPTIONS)} (SQLite URI options need uri=true)."
            )
    return SQLTarget(url=parsed, kind=kind, options=options)
