"""Fixtures: real PostgreSQL and MySQL/MariaDB servers, and isolated places in them.

Nothing is mocked. URLs come from ``TASKFLOW_TEST_POSTGRES_URL`` and
``TASKFLOW_TEST_MYSQL_URL``. When a server does not answer, its tests are skipped with
the reason — or fail loudly when ``TASKFLOW_REQUIRE_SERVICES=1``.

Isolation: SQLite tests get a file in ``tmp_path``; PostgreSQL tests a fresh schema
(dropped afterwards); MySQL tests a unique table prefix (its tables dropped afterwards).
"""

from __future__ import annotations

import asyncio
import gc
import os
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import SAWarning
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from fastapi_taskflow.clock import Clock
from fastapi_taskflow.testing.services import service_missing
from taskflow_sql import SQLBackend
from taskflow_sql.urls import parse_url

POSTGRES_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
MYSQL_DEFAULT = "mysql://root@127.0.0.1:3306/test"

_probed: dict[str, str | None] = {}


@dataclass(frozen=True)
class Place:
    """Where one test's tables live."""

    url: str
    prefix: str
    schema: str | None = None

    def backend(self, clock: Clock, **options: Any) -> SQLBackend:
        """An unopened backend on this place's tables."""
        return SQLBackend(
            self.url, table_prefix=self.prefix, schema=self.schema, clock=clock, **options
        )

    def manager_url(self) -> str:
        """This place as a ``TaskManager(backend=...)`` URL (its prefix and schema as
        query options)."""
        options = [f"table_prefix={self.prefix}"] if self.prefix else []
        if self.schema:
            options.append(f"schema={self.schema}")
        joiner = "&" if "?" in self.url else "?"
        return self.url + (joiner + "&".join(options) if options else "")


def unique_prefix() -> str:
    """A table prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}_"


async def _probe(url: str) -> str | None:
    engine = create_async_engine(parse_url(url).url)
    try:
        async with engine.connect() as conn:
            await asyncio.wait_for(conn.execute(text("SELECT 1")), 5)
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    finally:
        await engine.dispose()


def _service_url(env: str, default: str, name: str) -> str:
    url = os.environ.get(env, default)
    if url not in _probed:
        _probed[url] = asyncio.run(_probe(url))
    problem = _probed[url]
    if problem is not None:
        reason = f"no {name} server at {url} ({problem}); set {env}"
        service_missing(reason)
    return url


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio."""
    return "asyncio"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of a running PostgreSQL (skip or fail when there is none)."""
    return _service_url("TASKFLOW_TEST_POSTGRES_URL", POSTGRES_DEFAULT, "PostgreSQL")


@pytest.fixture(scope="session")
def mysql_url() -> str:
    """URL of a running MySQL/MariaDB (skip or fail when there is none)."""
    return _service_url("TASKFLOW_TEST_MYSQL_URL", MYSQL_DEFAULT, "MySQL/MariaDB")


@pytest.fixture
def sqlite_place(tmp_path: Path) -> Place:
    """A fresh SQLite file."""
    return Place(url=f"sqlite:///{tmp_path / 'tasks.db'}", prefix="taskflow_")


@pytest.fixture
async def postgres_place(postgres_url: str) -> AsyncIterator[Place]:
    """A fresh PostgreSQL schema, dropped with everything in it afterwards."""
    place = Place(url=postgres_url, prefix="taskflow_", schema=f"tf_{uuid.uuid4().hex[:12]}")
    yield place
    await drop_place(place)


@pytest.fixture
async def mysql_place(mysql_url: str) -> AsyncIterator[Place]:
    """A unique table prefix in the MySQL test database; its tables dropped afterwards."""
    place = Place(url=mysql_url, prefix=unique_prefix())
    yield place
    await drop_place(place)


async def drop_place(place: Place) -> None:
    """Drop a test's PostgreSQL schema or its prefixed MySQL tables."""
    target = parse_url(place.url)
    engine = create_async_engine(target.url)
    try:
        async with engine.begin() as conn:
            if target.kind == "postgresql" and place.schema:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{place.schema}" CASCADE'))
            elif target.kind == "mysql":
                rows = await conn.execute(
                    text(
                        "SELECT table_name FROM information_schema.tables "
                        "WHERE table_schema = DATABASE() AND table_name LIKE :p"
                    ),
                    {"p": place.prefix.replace("_", "\\_") + "%"},
                )
                names = [row[0] for row in rows]
                if names:
                    quoted = ", ".join(f"`{name}`" for name in names)
                    await conn.execute(text(f"DROP TABLE IF EXISTS {quoted}"))
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def place(request: pytest.FixtureRequest) -> Place:
    """An isolated place on each engine in turn."""
    fixture: Place = request.getfixturevalue(f"{request.param}_place")
    return fixture


@pytest.fixture
def cancelled_at_the_driver(
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., Awaitable[None]]:
    """Await a call in which reaching a pooled connection's driver connection is
    cancelled (the call must end in ``CancelledError``), then check that no connection
    was left checked out for the garbage collector to find (SQLAlchemy then terminates
    it with a "non-checked-in connection" warning). ``step=`` names another
    ``AsyncConnection`` coroutine method to cancel instead (``execution_options``)."""

    async def cancelled(self: AsyncConnection, *args: Any, **kwargs: Any) -> Any:
        raise asyncio.CancelledError

    async def run(call: Callable[[], Awaitable[Any]], step: str = "get_raw_connection") -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with monkeypatch.context() as patch:
                patch.setattr(AsyncConnection, step, cancelled)
                with pytest.raises(asyncio.CancelledError):
                    await call()
            gc.collect()
        assert [str(w.message) for w in caught if issubclass(w.category, SAWarning)] == []

    return run


_BLOCKED = {
    # a statement of another session waiting for a lock
    "postgresql": (
        "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND pid <> pg_backend_pid() AND query LIKE :statement"
    ),
    # a statement of another session that has not finished: the test holds the rows
    # it needs, so it is waiting for them. (``innodb_trx`` is not asked: MariaDB's can
    # show such a statement's transaction as RUNNING, with no query, for seconds.)
    "mysql": (
        "SELECT COUNT(*) FROM information_schema.processlist WHERE command = 'Query' "
        "AND id <> CONNECTION_ID() AND info LIKE :statement"
    ),
}


@pytest.fixture
def statement_blocked() -> Callable[..., Awaitable[None]]:
    """``await statement_blocked(backend, like)`` returns once the server runs a
    statement matching the SQL ``LIKE`` pattern ``like`` that waits for a lock the test
    holds (asked on a connection outside the backend's pool, which the statement may
    have exhausted); fails the test after ``timeout`` seconds."""

    async def blocked(backend: Any, like: str, timeout: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        watcher = create_async_engine(backend.engine.url)
        try:
            async with watcher.connect() as conn:
                while True:
                    found = await conn.scalar(text(_BLOCKED[backend.kind]), {"statement": like})
                    await conn.rollback()
                    if found:
                        return
                    assert loop.time() < deadline, f"no statement like {like!r} waited"
                    await asyncio.sleep(0.02)
        finally:
            await watcher.dispose()

    return blocked
