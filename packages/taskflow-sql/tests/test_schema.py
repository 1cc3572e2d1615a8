"""Schema creation, versioning and the upgrade path; table prefixes; SQLite pragmas."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import Connection, inspect, select, text

from fastapi_taskflow.clock import ManualClock
from taskflow_sql import SCHEMA_VERSION, SchemaVersionError, SQLBackend
from taskflow_sql.migrations import MIGRATIONS, Migration, migrate

pytestmark = pytest.mark.anyio


def _backend(place: Any, **kw: Any) -> SQLBackend:
    kw.setdefault("table_prefix", place.prefix)
    return SQLBackend(place.url, schema=place.schema, clock=ManualClock(), **kw)


async def _table_names(backend: SQLBackend) -> set[str]:
    def names(sync: Connection) -> set[str]:
        return set(inspect(sync).get_table_names(schema=backend.tables.schema))

    async with backend.engine.connect() as conn:
        return await conn.run_sync(names)


async def test_open_creates_a_versioned_schema(place: Any) -> None:
    backend = _backend(place)
    await backend.open()
    try:
        names = await _table_names(backend)
        assert {table.name for table in backend.tables.all()} <= names
        async with backend.engine.connect() as conn:
            rows = (await conn.execute(select(backend.tables.version))).all()
        assert [row.version for row in rows] == [SCHEMA_VERSION] == [1]
        await backend.open()  # idempotent
    finally:
        await backend.close()
        await backend.close()  # idempotent


async def test_concurrent_first_opens_migrate_once(place: Any) -> None:
    backends = [_backend(place) for _ in range(4)]
    await asyncio.gather(*(b.open() for b in backends))
    try:
        async with backends[0].engine.connect() as conn:
            count = await conn.scalar(
                select(backends[0].tables.version.c.version).where(
                    backends[0].tables.version.c.version == 1
                )
            )
        assert count == 1
    finally:
        for backend in backends:
            await backend.close()


async def test_upgrade_applies_new_migrations_in_order_and_keeps_data(place: Any) -> None:
    backend = _backend(place)
    await backend.open()
    clock = backend.clock
    from fastapi_taskflow.models import TaskRecord

    now = clock.now()
    await backend.create(TaskRecord(task_id="keep", func_name="f", created_at=now, updated_at=now))
    ctx = backend._ctx
    applied: list[int] = []

    def note(tables: Any) -> str:
        return (f'"{tables.schema}".' if tables.schema else "") + f"{tables.prefix}note"

    def add_note_table(sync: Connection, tables: Any) -> None:
        applied.append(2)
        sync.execute(text(f"CREATE TABLE {note(tables)} (id INTEGER PRIMARY KEY)"))

    def add_note_index(sync: Connection, tables: Any) -> None:
        applied.append(3)
        sync.execute(text(f"CREATE INDEX {tables.prefix}ix_note ON {note(tables)} (id)"))

    future = (
        *MIGRATIONS,
        Migration(2, "add note table", add_note_table),
        Migration(3, "index note", add_note_index),
    )
    try:
        assert await migrate(ctx, future) == 3
        assert applied == [2, 3]
        assert await migrate(ctx, future) == 3  # already there: nothing re-applied
        assert applied == [2, 3]
        async with backend.engine.connect() as conn:
            versions = (
                await conn.execute(
                    select(backend.tables.version.c.version).order_by(
                        backend.tables.version.c.version
                    )
                )
            ).scalars()
            assert list(versions) == [1, 2, 3]
        assert await backend.get("keep") is not None
        # Code that only knows version 1 refuses the newer schema.
        newer = _backend(place)
        with pytest.raises(SchemaVersionError, match="upgrade taskflow-sql"):
            await newer.open()
    finally:
        await backend.close()


def test_migration_functions_are_numbered_from_one() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


async def test_table_prefixes_isolate_stores(place: Any) -> None:
    first = _backend(place, table_prefix=place.prefix)
    second = _backend(place, table_prefix=place.prefix + "two_")
    await first.open()
    await second.open()
    try:
        from fastapi_taskflow.models import TaskRecord

        now = first.clock.now()
        record = TaskRecord(task_id="x", func_name="f", created_at=now, updated_at=now)
        assert (await first.create(record)).created
        assert await second.get("x") is None
        assert (await second.create(record)).created
        names = await _table_names(first)
        assert f"{place.prefix}tasks" in names and f"{place.prefix}two_tasks" in names
    finally:
        await first.close()
        await second.close()


async def test_sqlite_connections_use_wal_and_busy_timeout(sqlite_place: Any) -> None:
    backend = _backend(sqlite_place, sqlite_busy_timeout=7.5, sqlite_synchronous="NORMAL")
    await backend.open()
    try:
        async with backend.engine.connect() as conn:
            assert await conn.scalar(text("PRAGMA journal_mode")) == "wal"
            assert await conn.scalar(text("PRAGMA busy_timeout")) == 7500
            assert await conn.scalar(text("PRAGMA synchronous")) == 1  # NORMAL
    finally:
        await backend.close()


async def test_postgres_schema_option(postgres_place: Any) -> None:
    backend = _backend(postgres_place)
    await backend.open()
    try:
        async with backend.engine.connect() as conn:
            found = await conn.scalar(
                text(
                    "SELECT count(*) FROM information_schema.tables "
                    "WHERE table_schema = :s AND table_name = :t"
                ),
                {"s": postgres_place.schema, "t": f"{postgres_place.prefix}tasks"},
            )
        assert found == 1
    finally:
        await backend.close()
