"""URLs, entry points, passing an AsyncEngine, fork(), error wrapping."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from fastapi_taskflow.backends import open_backend
from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.errors import (
    BackendNotOpenError,
    BackendUnavailableError,
    BackendURLError,
    TaskflowError,
)
from fastapi_taskflow.models import TaskRecord
from taskflow_sql import SQLBackend
from taskflow_sql.engine import make_engine
from taskflow_sql.urls import parse_url

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("url", "driver", "kind"),
    [
        ("sqlite:///tasks.db", "sqlite+aiosqlite", "sqlite"),
        ("sqlite:////abs/tasks.db", "sqlite+aiosqlite", "sqlite"),
        ("postgresql://u:p@h:5432/db", "postgresql+asyncpg", "postgresql"),
        ("postgres://u@h/db", "postgresql+asyncpg", "postgresql"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg", "postgresql"),
        ("mysql://root@h:3306/db", "mysql+asyncmy", "mysql"),
        ("mysql+aiomysql://root@h/db", "mysql+aiomysql", "mysql"),
        ("mariadb://root@h/db", "mariadb+asyncmy", "mysql"),
    ],
)
def test_urls_map_to_async_drivers(url: str, driver: str, kind: str) -> None:
    target = parse_url(url)
    assert target.url.drivername == driver
    assert target.kind == kind


def test_pool_size_is_taken_from_the_query() -> None:
    target = parse_url("postgresql://u@h/db?pool_size=20&max_overflow=30&ssl=require")
    assert target.options == {"pool_size": "20", "max_overflow": "30"}
    assert dict(target.url.query) == {"ssl": "require"}
    engine = make_engine(target)
    assert engine.pool.size() == 20  # type: ignore[attr-defined]
    assert engine.pool._max_overflow == 30  # type: ignore[attr-defined]
    with pytest.raises(BackendURLError):
        parse_url("postgresql://u@h/db?pool_size=many")


def test_taskflow_options_are_taken_from_the_query() -> None:
    target = parse_url("postgresql://u@h/db?table_prefix=app_&schema=jobs&ssl=require")
    assert target.options == {"table_prefix": "app_", "schema": "jobs"}
    assert dict(target.url.query) == {"ssl": "require"}
    backend = SQLBackend("postgresql://u@h/db?table_prefix=app_&schema=jobs")
    assert backend.tables.tasks.name == "app_tasks"
    assert backend.tables.tasks.schema == "jobs"


@pytest.mark.parametrize(
    "url",
    [
        "tasks.db",
        "sqlite://",
        "sqlite:///:memory:",
        "postgresql://host",
        "mysql://root@h/db?schema=x",
        "oracle://u@h/db",
        "postgresql://u@h:notaport/db",
    ],
)
def test_bad_urls_raise_backend_url_error(url: str) -> None:
    with pytest.raises(BackendURLError):
        SQLBackend(url)


async def test_sync_driver_is_a_url_error(tmp_path: Path) -> None:
    backend = SQLBackend(f"sqlite+pysqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(BackendURLError, match="async driver"):
        await backend.open()


@pytest.mark.parametrize("prefix", ["drop table;", "", "x" * 41, "1abc", "\ud800"])
def test_bad_prefix_is_a_taskflow_error(prefix: str) -> None:
    """A table prefix the databases cannot use is a BackendURLError naming table_prefix
    (a TaskflowError, so ``except TaskflowError`` catches it), never a bare ValueError."""
    with pytest.raises(BackendURLError, match="table_prefix"):
        SQLBackend("sqlite:///x.db", table_prefix=prefix)
    if prefix and prefix.isascii():
        with pytest.raises(BackendURLError, match="table_prefix"):
            SQLBackend(f"sqlite:///x.db?table_prefix={quote(prefix)}")


@pytest.mark.parametrize("scheme", ["sqlite", "postgres", "postgresql", "mysql", "mariadb"])
def test_entry_points_build_sql_backends(scheme: str) -> None:
    url = "sqlite:///tasks.db" if scheme == "sqlite" else f"{scheme}://u@h/db"
    backend = open_backend(url, clock=ManualClock())
    assert isinstance(backend, SQLBackend)
    assert backend.durable


async def test_unreachable_servers_raise_backend_unavailable(tmp_path: Path) -> None:
    for url in (
        "postgresql://postgres@127.0.0.1:1/test",
        "mysql://root@127.0.0.1:1/test",
        f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}",
    ):
        backend = SQLBackend(url)
        with pytest.raises(BackendUnavailableError) as info:
            await backend.open()
        assert info.value.__cause__ is not None
        assert isinstance(info.value, TaskflowError)


def _record(clock: ManualClock, task_id: str, **fields: Any) -> TaskRecord:
    now = clock.now()
    return TaskRecord(task_id=task_id, func_name="f", created_at=now, updated_at=now, **fields)


async def test_a_passed_engine_is_shared_and_not_disposed(postgres_place: Any) -> None:
    engine = create_async_engine(parse_url(postgres_place.url).url)
    clock = ManualClock()
    backend = SQLBackend(engine, schema=postgres_place.schema, clock=clock)
    await backend.open()
    assert backend.engine is engine
    assert (await backend.create(_record(clock, "a"))).created
    fork = backend.fork()
    await fork.open()
    try:
        assert fork.engine is not engine
        got = await fork.get("a")
        assert got is not None and got.task_id == "a"
    finally:
        await fork.close()
    await backend.close()
    async with engine.connect() as conn:  # still usable: the app owns it
        assert await conn.scalar(text("SELECT 1")) == 1
    await engine.dispose()


async def test_a_passed_sqlite_engine_gets_the_pragmas(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}")
    backend = SQLBackend(engine, clock=ManualClock())
    await backend.open()
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("PRAGMA journal_mode")) == "wal"
    finally:
        await backend.close()
        await engine.dispose()


async def test_fork_is_unopened_with_same_settings(sqlite_place: Any) -> None:
    clock = ManualClock()
    backend = SQLBackend(sqlite_place.url, table_prefix="pfx_", clock=clock)
    fork = backend.fork()
    assert fork.clock is clock
    assert fork.tables.tasks.name == "pfx_tasks"
    with pytest.raises(BackendNotOpenError, match=r"call 'await backend.open\(\)' first"):
        await fork.get("x")
    # a fork (one per event loop) reuses the tables and so every statement compiled
    # for them; another prefix has tables of its own
    assert fork.tables is backend.tables
    assert SQLBackend(sqlite_place.url, table_prefix="other_").tables is not backend.tables


async def test_a_closed_backend_cannot_be_opened_again(sqlite_place: Any) -> None:
    backend = SQLBackend(sqlite_place.url)
    await backend.open()
    await backend.close()
    with pytest.raises(BackendNotOpenError, match="create a new one or fork"):
        await backend.open()
    with pytest.raises(TaskflowError):  # one except clause catches every taskflow error
        await backend.get("x")


def test_a_schema_that_is_not_text_is_refused() -> None:
    with pytest.raises(BackendURLError, match="schema must be a string"):
        SQLBackend("postgresql://u@h/db", schema=42)  # type: ignore[arg-type]


async def test_datetimes_round_trip_as_aware_utc(place: Any) -> None:
    clock = ManualClock()
    backend = SQLBackend(place.url, table_prefix=place.prefix, schema=place.schema, clock=clock)
    await backend.open()
    try:
        plus_two = timezone(timedelta(hours=2))
        created = datetime(2030, 5, 6, 9, 8, 7, 123456, tzinfo=plus_two)
        record = TaskRecord(task_id="dt", func_name="f", created_at=created, updated_at=created)
        result = await backend.create(record)
        assert result.record.created_at.tzinfo == timezone.utc
        stored = await backend.get("dt")
        assert stored is not None
        assert stored.created_at == created
        assert stored.created_at.tzinfo == timezone.utc
        assert stored.created_at.microsecond == 123456
    finally:
        await backend.close()
