"""Schema creation, versioning and the upgrade path; table prefixes; SQLite pragmas."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import Connection, bindparam, delete, inspect, select, text

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.errors import BackendURLError
from fastapi_taskflow.models import TaskQuery, TaskRecord, TaskStatus
from taskflow_sql import SCHEMA_VERSION, SchemaVersionError, SQLBackend
from taskflow_sql.context import Tx
from taskflow_sql.migrations import MIGRATIONS, Migration, migrate
from taskflow_sql.rows import record_values

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
        assert [row.version for row in rows] == list(range(1, SCHEMA_VERSION + 1)) == [1, 2, 3]
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
        applied.append(4)
        sync.execute(text(f"CREATE TABLE {note(tables)} (id INTEGER PRIMARY KEY)"))

    def add_note_index(sync: Connection, tables: Any) -> None:
        applied.append(5)
        sync.execute(text(f"CREATE INDEX {tables.prefix}ix_note ON {note(tables)} (id)"))

    future = (
        *MIGRATIONS,
        Migration(4, "add note table", add_note_table),
        Migration(5, "index note", add_note_index),
    )
    try:
        assert await migrate(ctx, future) == 5
        assert applied == [4, 5]
        assert await migrate(ctx, future) == 5  # already there: nothing re-applied
        assert applied == [4, 5]
        async with backend.engine.connect() as conn:
            versions = (
                await conn.execute(
                    select(backend.tables.version.c.version).order_by(
                        backend.tables.version.c.version
                    )
                )
            ).scalars()
            assert list(versions) == [1, 2, 3, 4, 5]
        assert await backend.get("keep") is not None
        # Code that only knows version 3 refuses the newer schema.
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


async def _sqlite_pragmas(backend: SQLBackend) -> tuple[Any, ...]:
    """journal_mode, busy_timeout and synchronous on a reader and on the writer."""
    async with backend.engine.connect() as conn:
        read = (
            await conn.scalar(text("PRAGMA journal_mode")),
            await conn.scalar(text("PRAGMA busy_timeout")),
            await conn.scalar(text("PRAGMA synchronous")),
        )

    async def on_writer(tx: Tx) -> Any:
        return await tx.conn.scalar(text("PRAGMA synchronous"))

    return (*read, await backend._exec.write("reading a pragma", on_writer))


async def test_sqlite_connections_use_wal_and_busy_timeout(sqlite_place: Any) -> None:
    backend = _backend(sqlite_place, sqlite_busy_timeout=7.5)
    await backend.open()
    try:
        # synchronous=NORMAL (1) by default, on readers and on the group-commit writer.
        assert await _sqlite_pragmas(backend) == ("wal", 7500, 1, 1)
    finally:
        await backend.close()


@pytest.mark.parametrize(
    ("option", "level"), [("full", 2), ("FULL", 2), ("normal", 1), ("extra", 3)]
)
async def test_sqlite_synchronous_url_option(sqlite_place: Any, option: str, level: int) -> None:
    backend = SQLBackend(f"{sqlite_place.url}?synchronous={option}", clock=ManualClock())
    await backend.open()
    try:
        assert (await _sqlite_pragmas(backend))[2:] == (level, level)
        now = backend.clock.now()
        record = TaskRecord(task_id="t", func_name="f", created_at=now, updated_at=now)
        assert (await backend.create(record)).created
        assert await backend.get("t") is not None  # the reader opens the same file
        fork = backend.fork()
        await fork.open()
        try:
            assert (await _sqlite_pragmas(fork))[2:] == (level, level)
        finally:
            await fork.close()
    finally:
        await backend.close()


def test_sqlite_synchronous_keyword_and_url_precedence(sqlite_place: Any) -> None:
    assert SQLBackend(sqlite_place.url)._sqlite.synchronous == "NORMAL"
    assert SQLBackend(sqlite_place.url, sqlite_synchronous="FULL")._sqlite.synchronous == "FULL"
    url = f"{sqlite_place.url}?synchronous=normal"
    assert SQLBackend(url, sqlite_synchronous="FULL")._sqlite.synchronous == "NORMAL"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///x.db?synchronous=off", "must be one of normal, full, extra"),
        ("postgresql://u@h/db?synchronous=full", "is a SQLite option"),
        ("mysql://u@h/db?synchronous=full", "is a SQLite option"),
    ],
)
def test_sqlite_synchronous_url_option_is_checked(url: str, message: str) -> None:
    with pytest.raises(BackendURLError, match=message):
        SQLBackend(url)


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


async def _back_to_version_1(backend: SQLBackend) -> None:
    """Turn a fresh database into what release 1 left: leases, no heartbeats/owner index."""
    tables = backend.tables
    prefix = tables.prefix
    where = f'"{tables.schema}".' if tables.schema else ""
    quote = "`" if backend.kind == "mysql" else '"'

    def name(table: str) -> str:
        return f"{where}{quote}{prefix}{table}{quote}"

    statements = []
    if backend.kind == "mysql":
        statements.append(f"DROP INDEX {prefix}ix_tasks_owner ON {name('tasks')}")
    else:
        statements.append(f"DROP INDEX {where}{prefix}ix_tasks_owner")
    statements += [
        f"ALTER TABLE {name('tasks')} DROP COLUMN active_owner",
        f"DROP TABLE {name('instances')}",
        f"CREATE TABLE {name('leases')} (task_id VARCHAR(255) PRIMARY KEY, "
        "owner VARCHAR(255) NOT NULL, expires_at VARCHAR(40) NOT NULL)",
        f"DROP TABLE {name('readers')}",
        f"DELETE FROM {name('schema_version')} WHERE version >= 2",
    ]
    async with backend.engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement))


async def test_version_1_database_upgrades_to_heartbeats_and_owners(place: Any) -> None:
    """Migration 2 keeps every task, copies lease owners onto ownerless active tasks,
    fills active_owner, and drops the leases table."""
    backend = _backend(place)
    await backend.open()
    try:
        await _back_to_version_1(backend)
        tables = backend.tables
        now = backend.clock.now()
        rows = [
            ("p-owned", TaskStatus.PENDING, "alive"),
            ("r-leased", TaskStatus.RUNNING, None),
            ("r-owned", TaskStatus.RUNNING, "dead"),
            ("done", TaskStatus.SUCCESS, "dead"),
        ]
        q = "`" if backend.kind == "mysql" else '"'
        where = f'"{tables.schema}".' if tables.schema else ""
        async with backend.engine.begin() as conn:
            for task_id, status, owner in rows:
                record = TaskRecord(
                    task_id=task_id,
                    func_name="f",
                    status=status,
                    owner=owner,
                    created_at=now,
                    updated_at=now,
                )
                values = record_values(record)
                del values["active_owner"]  # release 1 had no such column
                names = ", ".join(f"{q}{key}{q}" for key in values)
                binds = ", ".join(f":{key}" for key in values)
                insert = text(
                    f"INSERT INTO {where}{q}{tables.tasks.name}{q} ({names}) VALUES ({binds})"
                ).bindparams(*(bindparam(key, type_=tables.tasks.c[key].type) for key in values))
                await conn.execute(insert, values)
            await conn.execute(
                text(
                    f"INSERT INTO {where}{q}{tables.prefix}leases{q} (task_id, owner, expires_at) "
                    "VALUES ('r-leased', 'lease-holder', 'x'), ('r-owned', 'other', 'x')"
                )
            )
        assert await migrate(backend._ctx) == SCHEMA_VERSION == 3
        names = await _table_names(backend)
        assert f"{tables.prefix}leases" not in names
        assert f"{tables.prefix}instances" in names
        assert await backend.owners() == {"alive", "lease-holder", "dead"}
        leased = await backend.get("r-leased")
        assert leased is not None and leased.owner == "lease-holder"
        owned = await backend.get("r-owned")
        assert owned is not None and owned.owner == "dead"  # its own owner wins
        assert await backend.owned("dead") == ["r-owned"]
        page = await backend.query(TaskQuery())
        assert sorted(r.task_id for r in page.items) == sorted(r[0] for r in rows)
        await backend.beat("me")
        assert set(await backend.heartbeats()) == {"me"}
        assert await migrate(backend._ctx) == 3  # nothing left to do
    finally:
        await backend.close()


async def test_version_2_database_gets_the_readers_table(place: Any) -> None:
    """Migration 3 adds ``readers``; the tasks and heartbeats stay as they were."""
    backend = _backend(place)
    await backend.open()
    try:
        tables = backend.tables
        await backend.beat("alive")
        where = f'"{tables.schema}".' if tables.schema else ""
        quote = "`" if backend.kind == "mysql" else '"'
        async with backend.engine.begin() as conn:
            await conn.execute(text(f"DROP TABLE {where}{quote}{tables.readers.name}{quote}"))
            await conn.execute(delete(tables.version).where(tables.version.c.version == 3))
        assert tables.readers.name not in await _table_names(backend)
        assert await migrate(backend._ctx) == SCHEMA_VERSION == 3
        assert tables.readers.name in await _table_names(backend)
        assert set(await backend.heartbeats()) == {"alive"}
        await backend.announce_reader("dashboard", ttl_seconds=30)
        assert await backend.readers() == {"dashboard"}
    finally:
        await backend.close()
