"""Shared fixtures of tests-integration/: small and backend-neutral.

* ``anyio_backend``: async tests run with ``@pytest.mark.anyio`` on asyncio.
* ``wait_for``: poll a (sync or async) predicate until it holds, with a deadline.
* ``seed_backend_url``: parametrized over ``TASKFLOW_SEED_BACKENDS`` (comma separated
  backend URLs, default ``memory://``; ``{tmp}`` is replaced by a per-test temporary
  directory), so a test requesting it runs once per backend.
* ``load_seed_app``: import a fresh copy of ``seed_apps/<name>.py`` with
  ``TASKFLOW_BACKEND`` set to ``seed_backend_url``, so every test gets its own
  ``TaskManager``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import itertools
import os
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest

from fastapi_taskflow.testing.services import service_missing

SEED_APPS = Path(__file__).resolve().parent / "seed_apps"
SEED_BACKENDS_ENV = "TASKFLOW_SEED_BACKENDS"


def _seed_backends() -> list[str]:
    raw = os.environ.get(SEED_BACKENDS_ENV, "") or "memory://"
    return [url.strip() for url in raw.split(",") if url.strip()]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _wait_for(
    predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01
) -> Any:
    """Return the predicate's first truthy result; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s: {predicate!r}")
        await asyncio.sleep(interval)


@pytest.fixture
def wait_for() -> Callable[..., Awaitable[Any]]:
    """``await wait_for(lambda: ..., timeout=5)``; the predicate may be async."""
    return _wait_for


@pytest.fixture(params=_seed_backends())
def seed_backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The backend URL of this run; ``{uid}`` becomes a unique id (a prefix or schema),
    whose keys or schema are removed after the test."""
    uid = uuid.uuid4().hex[:12]
    url: str = request.param.replace("{tmp}", str(tmp_path)).replace("{uid}", uid)
    require_reachable(url)
    yield url
    if uid in url:
        _drop_isolated(url, uid)


def require_reachable(url: str) -> None:
    """Skip (or, with ``TASKFLOW_REQUIRE_SERVICES=1``, fail) when the URL's server is down."""
    parts = urlsplit(url)
    if parts.scheme in ("memory", "sqlite") or not parts.hostname:
        return
    port = parts.port or {"postgresql": 5432, "mysql": 3306, "redis": 6379}.get(
        parts.scheme.split("+", 1)[0], 0
    )
    try:
        socket.create_connection((parts.hostname, port), timeout=3).close()
    except OSError as exc:
        reason = f"{parts.scheme} server at {parts.hostname}:{port} is not reachable: {exc}"
        service_missing(reason)


def _drop_isolated(url: str, uid: str) -> None:
    """Remove what a test created under its unique id on a shared server."""
    if url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(url.split("?", 1)[0])
        try:
            keys = list(client.scan_iter(match=f"*{uid}*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
    elif url.startswith(("postgresql://", "postgres://")) and "schema=" in url:
        import asyncpg

        schema = url.split("schema=", 1)[1].split("&", 1)[0]

        async def drop() -> None:
            conn = await asyncpg.connect(
                url.split("?", 1)[0].replace("postgresql://", "postgres://")
            )
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()

        asyncio.run(drop())
    elif url.startswith(("mysql://", "mariadb://")) and "table_prefix=" in url:
        from sqlalchemy import text
        from sqlalchemy.exc import OperationalError
        from sqlalchemy.ext.asyncio import create_async_engine

        prefix = url.split("table_prefix=", 1)[1].split("&", 1)[0]
        server = "mysql+asyncmy://" + url.split("://", 1)[1].split("?", 1)[0]

        async def drop_tables() -> None:
            engine = create_async_engine(server)
            try:
                async with engine.begin() as conn:
                    rows = await conn.execute(
                        text(
                            "SELECT table_name FROM information_schema.tables "
                            "WHERE table_schema = DATABASE() AND table_name LIKE :p"
                        ),
                        {"p": prefix.replace("_", "\\_") + "%"},
                    )
                    names = [row[0] for row in rows]
                    if names:
                        await conn.execute(text("SET FOREIGN_KEY_CHECKS = 0"))
                        # A connection of the test left in a transaction on these tables
                        # holds their metadata lock; the server's own wait for it is a
                        # day: fail in a minute, saying who holds what, instead of hanging.
                        await conn.execute(text("SET SESSION lock_wait_timeout = 60"))
                        try:
                            await conn.execute(
                                text("DROP TABLE " + ", ".join(f"`{n}`" for n in names))
                            )
                        except OperationalError as exc:
                            if getattr(exc.orig, "args", (None,))[0] != 1205:
                                raise
                            raise AssertionError(
                                f"could not drop the test's tables {names}: {exc.orig}; "
                                f"{await _mysql_holders(server)}"
                            ) from exc
            finally:
                await engine.dispose()

        asyncio.run(drop_tables())


async def _mysql_holders(server: str) -> str:
    """The server's sessions and open transactions, for a failed teardown's message."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(server)
    try:
        async with engine.connect() as conn:
            sessions = (
                await conn.execute(
                    text(
                        "SELECT id, command, time, state, LEFT(info, 200) "
                        "FROM information_schema.processlist WHERE id <> CONNECTION_ID()"
                    )
                )
            ).all()
            transactions = (
                await conn.execute(
                    text(
                        "SELECT trx_mysql_thread_id, trx_state, trx_started, "
                        "LEFT(trx_query, 200) FROM information_schema.innodb_trx"
                    )
                )
            ).all()
        return f"sessions: {sessions}; transactions: {transactions}"
    except Exception as exc:  # the message is a diagnosis; never hide the first error
        return f"(could not list the server's sessions: {exc!r})"
    finally:
        await engine.dispose()


_counter = itertools.count()


@pytest.fixture
def load_seed_app(
    seed_backend_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], ModuleType]]:
    """``load_seed_app("name")`` imports a fresh ``seed_apps/name.py`` on the backend."""
    monkeypatch.setenv("TASKFLOW_BACKEND", seed_backend_url)
    loaded: list[ModuleType] = []

    def load(name: str) -> ModuleType:
        module_name = f"seed_{name}_{next(_counter)}"
        spec = importlib.util.spec_from_file_location(module_name, SEED_APPS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
        loaded.append(module)
        return module

    yield load

    from fastapi_taskflow import TaskManager

    for module in loaded:
        sys.modules.pop(module.__name__, None)
        for value in list(vars(module).values()):
            if isinstance(value, TaskManager):
                # Closes what a test left open (the blocking bridge's thread, a manager
                # that was never entered); a no-op for a manager already shut down.
                asyncio.run(value.shutdown(timeout=5))
