"""Schema versions and how a database moves from one to the next.

The ``<prefix>schema_version`` table has one row per applied migration. :func:`migrate`
runs on every ``open()``:

1. If the recorded version equals :data:`SCHEMA_VERSION`, nothing else happens (one
   cheap read, no lock).
2. Otherwise it takes a lock that every instance takes for the same prefix/schema —
   ``pg_advisory_xact_lock`` on PostgreSQL, ``GET_LOCK`` on MySQL/MariaDB, the write
   lock (``BEGIN IMMEDIATE``) on SQLite — reads the version again, and applies every
   migration numbered above it, in order, each recorded in ``schema_version``.
3. A database whose version is *newer* than this code knows raises
   :class:`~taskflow_sql.errors.SchemaVersionError`: old code never writes to a schema
   it does not understand.

Adding a migration: append ``Migration(n + 1, "what changes", function)`` to
:data:`MIGRATIONS`. The function receives a synchronous SQLAlchemy ``Connection`` and
the :class:`~taskflow_sql.schema.Tables` and issues its own DDL/DML (``ALTER TABLE``,
``CREATE INDEX``, backfills in batches) — never ``metadata.create_all`` on tables that
already exist, and never a destructive change without first copying the data. On
PostgreSQL and SQLite a migration runs in the same transaction as its version row, so a
failure leaves the previous version intact; MySQL commits DDL implicitly, so MySQL
migrations must be written to be safely re-run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import (
    Column,
    Connection,
    MetaData,
    String,
    Table,
    exists,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from fastapi_taskflow.models import ACTIVE_STATUSES

from .context import SQLContext
from .errors import SchemaVersionError
from .executor import connect, release
from .schema import Tables

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Migration", "current_version", "migrate"]


@dataclass(frozen=True)
class Migration:
    """One step of the schema's history.

    Attributes:
        version: the version the database is at after this step (1, 2, …).
        description: what the step changes, recorded in ``schema_version``.
        apply: the step, run with a synchronous connection inside the migration lock.
    """

    version: int
    description: str
    apply: Callable[[Connection, Tables], None]


def _initial_schema(conn: Connection, tables: Tables) -> None:
    """Version 1 on a new database: every table as this release defines it.

    A new database thus gets the current schema at once; the later steps check what
    exists and change nothing on it.
    """
    tables.metadata.create_all(conn, tables=tables.all()[1:], checkfirst=True)


_ACTIVE = sorted(status.value for status in ACTIVE_STATUSES)


def _instances_and_owners(conn: Connection, tables: Tables) -> None:
    """Version 2: per-instance heartbeats replace per-task leases.

    Adds ``tasks.active_owner`` (the owner while PENDING/RUNNING) with its index, fills
    it, creates ``instances``, and drops ``leases`` after copying each live lease's owner
    onto its task when the task names none (so recovery still finds those tasks: their
    owners have no heartbeat). Safe to re-run (MySQL commits DDL as it goes).
    """
    inspector = inspect(conn)
    schema = tables.schema
    tasks = tables.tasks
    columns = {column["name"] for column in inspector.get_columns(tasks.name, schema=schema)}
    if "active_owner" not in columns:
        column = tasks.c.active_owner
        preparer = conn.dialect.identifier_preparer
        kind = column.type.compile(dialect=conn.dialect)
        conn.execute(
            text(
                f"ALTER TABLE {preparer.format_table(tasks)} "
                f"ADD COLUMN {preparer.format_column(column)} {kind} NULL"
            )
        )
    leases = Table(
        f"{tables.prefix}leases",
        MetaData(schema=schema),
        Column("task_id", String(255), primary_key=True),
        Column("owner", String(255)),
    )
    if inspector.has_table(leases.name, schema=schema):
        held = select(leases.c.owner).where(leases.c.task_id == tasks.c.task_id).scalar_subquery()
        conn.execute(
            update(tasks)
            .where(
                tasks.c.owner.is_(None),
                tasks.c.status.in_(_ACTIVE),
                exists().where(leases.c.task_id == tasks.c.task_id),
            )
            .values(owner=held)
        )
        leases.drop(conn)
    conn.execute(
        update(tasks)
        .where(
            tasks.c.status.in_(_ACTIVE),
            tasks.c.owner.is_not(None),
            tasks.c.active_owner.is_(None),
        )
        .values(active_owner=tasks.c.owner)
    )
    index = next(ix for ix in tasks.indexes if ix.name == f"{tables.prefix}ix_tasks_owner")
    index.create(conn, checkfirst=True)
    tables.instances.create(conn, checkfirst=True)


def _readers(conn: Connection, tables: Tables) -> None:
    """Version 3: the ``readers`` table (instances publish events only while a reader
    is announced there). Safe to re-run."""
    tables.readers.create(conn, checkfirst=True)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "initial schema: tasks, tags, logs, counters, queue, leases, locks, run keys, events",
        _initial_schema,
    ),
    Migration(
        2,
        "instance heartbeats replace task leases: instances table, tasks.active_owner "
        "and its index, leases dropped",
        _instances_and_owners,
    ),
    Migration(3, "readers of the event fan-out: readers table", _readers),
)
"""Every migration, oldest first."""

SCHEMA_VERSION = MIGRATIONS[-1].version
"""The schema version this release writes."""


async def current_version(conn: AsyncConnection, tables: Tables) -> int:
    """Return the recorded schema version; 0 when the version table does not exist."""
    version = tables.version

    def exists(sync: Connection) -> bool:
        return inspect(sync).has_table(version.name, schema=tables.schema)

    if not await conn.run_sync(exists):
        return 0
    return int(await conn.scalar(select(func.max(version.c.version))) or 0)


def _lock_name(tables: Tables) -> str:
    raw = f"taskflow:{tables.schema or ''}:{tables.prefix}"
    return "taskflow_" + hashlib.sha256(raw.encode()).hexdigest()[:40]


def _lock_key(tables: Tables) -> int:
    digest = hashlib.sha256(_lock_name(tables).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def migrate(ctx: SQLContext, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the schema up to the newest of ``migrations``; return the version.

    Raises:
        SchemaVersionError: the database's version is newer than ``migrations`` know.
    """
    target = migrations[-1].version if migrations else 0
    conn = await connect(ctx, write=True)
    try:
        async with conn.begin():
            found = await current_version(conn, ctx.tables)
        if found == target:
            return found
        _check_not_newer(found, target)
        if ctx.kind == "mysql":
            return await _migrate_mysql(conn, ctx, migrations)
        async with conn.begin():
            if ctx.kind == "postgresql":
                await conn.execute(select(func.pg_advisory_xact_lock(_lock_key(ctx.tables))))
                if ctx.tables.schema:
                    await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{ctx.tables.schema}"'))
            return await _apply(conn, ctx, migrations)
    finally:
        await release(conn)


async def _migrate_mysql(
    conn: AsyncConnection, ctx: SQLContext, migrations: Sequence[Migration]
) -> int:
    name = _lock_name(ctx.tables)
    got = await conn.scalar(text("SELECT GET_LOCK(:name, 120)"), {"name": name})
    await conn.commit()
    if got != 1:
        raise SchemaVersionError(
            "timed out waiting for another instance to finish migrating the taskflow schema"
        )
    try:
        version = await _apply(conn, ctx, migrations)
        await conn.commit()
        return version
    finally:
        await conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": name})
        await conn.commit()


async def _apply(conn: AsyncConnection, ctx: SQLContext, migrations: Sequence[Migration]) -> int:
    tables = ctx.tables

    def create_version_table(sync: Connection) -> None:
        tables.version.create(sync, checkfirst=True)

    await conn.run_sync(create_version_table)
    found = await current_version(conn, tables)
    target = migrations[-1].version if migrations else 0
    _check_not_newer(found, target)
    for migration in migrations:
        if migration.version <= found:
            continue

        def step(sync: Connection, migration: Migration = migration) -> None:
            migration.apply(sync, tables)

        await conn.run_sync(step)
        await conn.execute(
            insert(tables.version).values(
                version=migration.version,
                description=migration.description[:255],
                applied_at=ctx.clock.now(),
            )
        )
        found = migration.version
    return found


def _check_not_newer(found: int, target: int) -> None:
    if found > target:
        raise SchemaVersionError(
            f"the database's taskflow schema is at version {found}, newer than this "
            f"taskflow-sql knows ({target}); upgrade taskflow-sql in this deployment"
        )
