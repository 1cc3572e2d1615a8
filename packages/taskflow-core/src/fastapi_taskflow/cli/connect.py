"""Which backend a command talks to, and opening it safely.

The URL comes from ``--backend`` or ``TASKFLOW_BACKEND``. It is never printed as given:
:func:`mask_url` hides its password (and secret-looking query values) where the
store is named in output, and :func:`scrub` removes the password and the server's
address from any error before it is shown, since a driver's error may quote them.

Before a SQL store is opened (which would create its tables), :func:`preflight` checks
that the SQLite file exists and that the database holds taskflow's tables at a schema
version this release understands, so a typo in the URL is an error, not a new empty store.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from ..backends import ENV_VAR, open_backend
from ..clock import Clock, SystemClock
from ..errors import TaskflowError
from ..protocols import TaskBackend
from ..redaction import MASK, hide_hosts_of, mask_secrets, password_span
from .errors import CLIError, ExitCode

__all__ = [
    "SQL_SCHEMES",
    "SchemaInfo",
    "mask_url",
    "open_store",
    "preflight",
    "resolve_url",
    "schema_info",
    "scheme_of",
    "scrub",
]

SQL_SCHEMES = frozenset({"sqlite", "postgres", "postgresql", "mysql", "mariadb"})
_SECRET_PARAMS = ("password", "passwd", "pass", "secret", "token", "key", "auth")


def resolve_url(given: str | None) -> str:
    """Return the backend URL to use: ``--backend``, else ``TASKFLOW_BACKEND``.

    Raises:
        CLIError: (bad usage) neither is set, or the URL is ``memory://``.
    """
    url = (given or os.environ.get(ENV_VAR) or "").strip()
    if not url:
        raise CLIError(
            ExitCode.USAGE,
            f"no backend given: pass --backend URL or set {ENV_VAR} (the URL your app's "
            "TaskManager uses, e.g. sqlite:///tasks.db, postgresql://host/db, "
            "redis://host:6379/0)",
        )
    if scheme_of(url) == "memory":
        raise CLIError(
            ExitCode.USAGE,
            "memory:// is the in-process store of one app process: a command line (another "
            "process) cannot see its tasks. Point --backend at a shared store "
            "(sqlite:///..., postgresql://..., mysql://..., redis://...) or use the admin "
            "API (TaskAdmin) inside the app.",
        )
    return url


def scheme_of(url: str) -> str:
    """The URL's scheme without a ``+driver`` suffix, lower-cased ('' if none)."""
    if "://" not in url:
        return ""
    return url.split("://", 1)[0].split("+", 1)[0].lower()


def _password(url: str) -> str | None:
    span = password_span(url)
    return url[span[0] : span[1]] if span is not None else None


def _without_password(url: str) -> str:
    """``url`` with its password (if any) replaced by ***."""
    span = password_span(url)
    return url if span is None else f"{url[: span[0]]}{MASK}{url[span[1] :]}"


def mask_url(url: str) -> str:
    """Return ``url`` with its password and secret-looking query values replaced by ***
    (the password read as leniently as the drivers read it: see
    :func:`~fastapi_taskflow.redaction.password_span`)."""
    if "://" not in url:
        return url
    location, sep, query = _without_password(url).partition("?")
    if sep:
        pairs = []
        for name, value in parse_qsl(query, keep_blank_values=True):
            if any(secret in name.lower() for secret in _SECRET_PARAMS):
                value = MASK
            pairs.append(f"{name}={value}")
        query = "&".join(pairs)
    return f"{location}{sep}{query}"


def _secrets(url: str) -> list[str]:
    found: list[str] = []
    password = _password(url)
    if password:
        found += [password, unquote(password)]
    _, sep, query = _without_password(url).partition("?")
    if sep:
        for name, value in parse_qsl(query, keep_blank_values=True):
            if value and any(secret in name.lower() for secret in _SECRET_PARAMS):
                found.append(value)
    return sorted({s for s in found if s}, key=len, reverse=True)


def scrub(message: str, url: str | None) -> str:
    """Remove ``url``'s password (and secret query values) and the server's address
    from ``message``, an error about to be shown (see
    :func:`fastapi_taskflow.redaction.mask_secrets`)."""
    if url:
        hide_hosts_of(url)
        for secret in _secrets(url):
            message = message.replace(secret, "***")
    return mask_secrets(message)


@dataclass(frozen=True)
class SchemaInfo:
    """What a SQL database holds: taskflow's schema version and the one this release
    writes, where the tables are (prefix, PostgreSQL schema), and the engine kind."""

    kind: str
    found: int
    expected: int
    prefix: str
    schema: str | None
    database: str


async def schema_info(url: str) -> SchemaInfo:
    """Read the taskflow schema version of a SQL database without changing anything.

    Raises:
        CLIError: (store unavailable) the database cannot be reached or the SQLite file
            does not exist; (bad usage) taskflow-sql is not installed.
    """
    try:
        from taskflow_sql.engine import make_engine
        from taskflow_sql.migrations import SCHEMA_VERSION, current_version
        from taskflow_sql.schema import DEFAULT_PREFIX, build_tables
        from taskflow_sql.urls import parse_url
    except ImportError:  # pragma: no cover - open_backend names the package first
        raise CLIError(
            ExitCode.USAGE,
            'SQL backends need taskflow-sql: pip install "taskflow-core[sql]"',
        ) from None
    target = parse_url(url)
    prefix = target.options.get("table_prefix", DEFAULT_PREFIX)
    schema = target.options.get("schema")
    database = str(target.url.database or "")
    if target.kind == "sqlite" and not _is_file(database):
        raise CLIError(
            ExitCode.UNAVAILABLE,
            f"no SQLite database file at {database!r}: check the path in the URL (an app "
            "using this backend creates the file when it starts)",
        )
    engine = make_engine(target)
    try:
        try:
            conn = await engine.connect()
        except Exception as exc:
            raise CLIError(
                ExitCode.UNAVAILABLE,
                f"cannot connect to the {target.kind} database: {type(exc).__name__}: {exc}. "
                "Check that the server runs and the URL (host, port, database, "
                "credentials) is right.",
            ) from exc
        try:
            found = await current_version(conn, build_tables(prefix, schema))
        finally:
            await conn.close()
    finally:
        await engine.dispose()
    return SchemaInfo(target.kind, found, SCHEMA_VERSION, prefix, schema, database)


def _is_file(path: str) -> bool:
    return Path(path).is_file()


def describe_missing(info: SchemaInfo) -> str:
    """The message for a database without taskflow's tables."""
    where = f"table prefix {info.prefix!r}" + (
        f" in PostgreSQL schema {info.schema!r}" if info.schema else ""
    )
    return (
        f"no taskflow tables in this {info.kind} database ({where}): check the URL "
        "(database, ?table_prefix=, ?schema=); an app using this backend creates them when "
        "it starts"
    )


def describe_newer(info: SchemaInfo) -> str:
    """The message for a database with a schema newer than this release."""
    return (
        f"the database holds taskflow schema version {info.found}, newer than this "
        f"release's {info.expected}: upgrade taskflow-sql here (pip install -U "
        '"taskflow-core[sql]") before using this command'
    )


async def preflight(url: str) -> None:
    """Refuse a SQL store without taskflow's tables or with a newer schema.

    Raises:
        CLIError: (store unavailable) with a message naming the fix.
    """
    if scheme_of(url) not in SQL_SCHEMES:
        return
    info = await schema_info(url)
    if info.found == 0:
        raise CLIError(ExitCode.UNAVAILABLE, describe_missing(info))
    if info.found > info.expected:
        raise CLIError(ExitCode.UNAVAILABLE, describe_newer(info))


@asynccontextmanager
async def open_store(url: str, *, clock: Clock | None = None) -> AsyncIterator[TaskBackend]:
    """Check and open the backend at ``url``; close it on the way out.

    Raises:
        CLIError: bad usage (unknown scheme, missing package) or store unavailable.
        TaskflowError: what the backend raised while opening.
    """
    # Building the backend first finds its package (or names the extra to install).
    backend = open_backend(url, clock=clock or SystemClock())
    await preflight(url)
    await backend.open()
    try:
        yield backend
    finally:
        with suppress(TaskflowError):
            await backend.close()


def summary_of_url(url: str) -> dict[str, Any]:
    """The backend part of ``check``'s output: the masked URL and its scheme."""
    return {"url": mask_url(url), "scheme": scheme_of(url)}
