"""The tables of the SQL backend, built for one table prefix and (PostgreSQL) schema.

Version 3 of the schema (see :mod:`taskflow_sql.migrations`). Every index here serves a
query the backend runs:

* ``tasks``: one row per task. ``active_key`` holds the SHA-256 of the idempotency key
  while the task holds it (NULL once FAILED/REJECTED), under a UNIQUE index: that index
  is what makes idempotent create atomic. The task list is served by
  ``(created_at, task_id)`` and ``(status|func_name|queue, created_at, task_id)``
  (keyset pagination, newest first); purge by ``finished_at``. ``active_owner`` is the
  owner while the task is PENDING or RUNNING (NULL once it finished, like ``active_key``):
  ``(active_owner, created_at, task_id)`` serves ``owners()`` (a skip scan over the
  distinct owners) and ``owned(owner)`` without touching finished tasks.
* ``task_tags``: one row per tag, ``(key, value, task_id)`` indexed for "filter by tag".
  Tags are also kept as JSON on the task row, so reading a task needs no join.
* ``task_logs``: ordered by an auto-increment id, indexed by ``(task_id, id)``.
* ``counters``: tasks per ``(func_name, status)``, changed in the same transaction as
  every create, transition and purge, so ``stats()`` reads a few rows, not millions.
  PostgreSQL and MySQL spread each counter over ``slot`` rows to avoid a hot row.
* ``queue``: runnable task ids; ``neg_priority`` is ``-priority`` so the claim order
  ``(neg_priority, due_at, id)`` is one ascending index scan on every engine.
* ``instances``: one heartbeat row per live instance (``beat``/``heartbeats``).
* ``locks``, ``run_keys``: rows with an owner and an expiry.
* ``readers``: one row per announced reader of the events, with its expiry
  (``announce_reader``/``readers``): instances publish only while one is there.
* ``events``: the fan-out log polled by subscribers where LISTEN/NOTIFY is not available.
* ``schema_version``: one row per applied migration (see :mod:`taskflow_sql.migrations`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from fastapi_taskflow.errors import BackendURLError

from .types import AutoId, LongText, UTCDateTime

__all__ = [
    "DEFAULT_PREFIX",
    "TAG_LENGTH",
    "Tables",
    "build_tables",
    "check_id",
    "instances_table",
]

DEFAULT_PREFIX = "taskflow_"
"""The table prefix used unless one is given."""

ID_LENGTH = 255
"""Longest task id, queue name, function name, owner or lock name."""

TAG_LENGTH = 191
"""Longest tag key or value stored as is in ``task_tags`` (longer ones are hashed)."""

_PREFIX_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")

_MYSQL: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
    "mariadb_engine": "InnoDB",
    "mariadb_charset": "utf8mb4",
    "mariadb_collate": "utf8mb4_bin",
}


@dataclass(frozen=True)
class Tables:
    """The backend's tables for one prefix/schema."""

    metadata: MetaData
    prefix: str
    schema: str | None
    tasks: Table
    tags: Table
    logs: Table
    counters: Table
    queue: Table
    instances: Table
    locks: Table
    readers: Table
    run_keys: Table
    events: Table
    version: Table

    def all(self) -> list[Table]:
        """Return every table, in creation order."""
        return [
            self.version,
            self.tasks,
            self.tags,
            self.logs,
            self.counters,
            self.queue,
            self.instances,
            self.locks,
            self.readers,
            self.run_keys,
            self.events,
        ]


def check_id(value: str, what: str) -> None:
    """Raise ``ValueError`` naming ``what`` when ``value`` does not fit an id column.

    Raises:
        ValueError: ``value`` is longer than :data:`ID_LENGTH` characters.
    """
    if len(value) > ID_LENGTH:
        raise ValueError(f"{what} are at most {ID_LENGTH} characters: {value[:40]!r}…")


def _id(name: str, **kw: bool) -> Column[str]:
    return Column(name, String(ID_LENGTH), **kw)  # type: ignore[arg-type]


def instances_table(md: MetaData, prefix: str) -> Table:
    """The ``<prefix>instances`` table: one heartbeat per instance (schema version 2)."""
    return Table(
        f"{prefix}instances",
        md,
        _id("instance_id", primary_key=True),
        Column("beat_at", UTCDateTime, nullable=False),
        **_MYSQL,
    )


def build_tables(prefix: str = DEFAULT_PREFIX, schema: str | None = None) -> Tables:
    """The current schema's tables named ``<prefix><name>`` in ``schema``.

    Built once per prefix and schema and shared (read only) by every backend using
    them: a backend is made per event loop (a bare ``TestClient`` makes one per request)
    and the statements compiled for a table are cached by table, so new tables would
    cost ~10 ms to build and the compiling again.

    Raises:
        BackendURLError: the prefix is not a plain identifier (letters, digits, underscore;
            at most 40 characters, so index names stay within MySQL's 64).
    """
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
        raise BackendURLError(
            f"table_prefix {prefix!r} must be letters, digits and underscores, start with "
            "a letter or underscore, and be at most 40 characters"
        )
    if schema is not None and not isinstance(schema, str):
        raise BackendURLError(f"schema must be a string, got {type(schema).__name__}")
    return _build_tables(prefix, schema)


@lru_cache(maxsize=64)
def _build_tables(prefix: str, schema: str | None) -> Tables:
    md = MetaData(schema=schema)
    p = prefix

    tasks = Table(
        f"{p}tasks",
        md,
        _id("task_id", primary_key=True),
        _id("func_name", nullable=False),
        Column("status", String(16), nullable=False),
        Column("prev_status", String(16), nullable=True),
        _id("queue", nullable=False),
        Column("priority", Integer, nullable=False, default=0),
        Column("args", LongText, nullable=True),
        Column("kwargs", LongText, nullable=True),
        Column("tags", Text, nullable=False),
        Column("idempotency_key", Text, nullable=True),
        Column("active_key", String(64), nullable=True),
        Column("attempt", Integer, nullable=False, default=0),
        Column("max_retries", Integer, nullable=False, default=0),
        Column("requeue_on_interrupt", Boolean, nullable=False, default=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
        Column("started_at", UTCDateTime, nullable=True),
        Column("finished_at", UTCDateTime, nullable=True),
        Column("error", LongText, nullable=True),
        Column("result", LongText, nullable=True),
        Column("progress", Float, nullable=True),
        Column("cancel_requested", Boolean, nullable=False, default=False),
        _id("owner", nullable=True),
        _id("active_owner", nullable=True),
        UniqueConstraint("active_key", name=f"{p}uq_tasks_active_key"),
        Index(f"{p}ix_tasks_created", "created_at", "task_id"),
        Index(f"{p}ix_tasks_status", "status", "created_at", "task_id"),
        Index(f"{p}ix_tasks_func", "func_name", "created_at", "task_id"),
        Index(f"{p}ix_tasks_queue", "queue", "created_at", "task_id"),
        Index(f"{p}ix_tasks_finished", "finished_at"),
        Index(f"{p}ix_tasks_owner", "active_owner", "created_at", "task_id"),
        **_MYSQL,
    )
    tags = Table(
        f"{p}task_tags",
        md,
        _id("task_id", primary_key=True),
        Column("key", String(TAG_LENGTH), primary_key=True),
        Column("value", String(TAG_LENGTH), nullable=False),
        Index(f"{p}ix_tags_key_value", "key", "value", "task_id"),
        **_MYSQL,
    )
    logs = Table(
        f"{p}task_logs",
        md,
        Column("id", AutoId, primary_key=True, autoincrement=True),
        _id("task_id", nullable=False),
        Column("timestamp", UTCDateTime, nullable=False),
        Column("level", String(32), nullable=False),
        Column("message", LongText, nullable=False),
        Column("attempt", Integer, nullable=False),
        Column("extra", LongText, nullable=True),
        Index(f"{p}ix_logs_task", "task_id", "id"),
        sqlite_autoincrement=True,
        **_MYSQL,
    )
    counters = Table(
        f"{p}counters",
        md,
        _id("func_name", primary_key=True),
        Column("status", String(16), primary_key=True),
        Column("slot", SmallInteger, primary_key=True, autoincrement=False),
        Column("n", AutoId, nullable=False),
        **_MYSQL,
    )
    queue = Table(
        f"{p}queue",
        md,
        Column("id", AutoId, primary_key=True, autoincrement=True),
        _id("queue", nullable=False),
        _id("task_id", nullable=False),
        Column("neg_priority", Integer, nullable=False),
        Column("due_at", UTCDateTime, nullable=False),
        UniqueConstraint("queue", "task_id", name=f"{p}uq_queue_task"),
        Index(f"{p}ix_queue_claim", "queue", "neg_priority", "due_at", "id"),
        sqlite_autoincrement=True,
        **_MYSQL,
    )
    instances = instances_table(md, p)
    locks = Table(
        f"{p}locks",
        md,
        _id("name", primary_key=True),
        _id("owner", nullable=False),
        Column("expires_at", UTCDateTime, nullable=False),
        **_MYSQL,
    )
    readers = Table(
        f"{p}readers",
        md,
        _id("reader_id", primary_key=True),
        Column("expires_at", UTCDateTime, nullable=False),
        **_MYSQL,
    )
    run_keys = Table(
        f"{p}run_keys",
        md,
        Column("key_hash", String(64), primary_key=True),
        Column("run_key", Text, nullable=False),
        _id("task_id", nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        **_MYSQL,
    )
    events = Table(
        f"{p}events",
        md,
        Column("id", AutoId, primary_key=True, autoincrement=True),
        Column("payload", LongText, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        sqlite_autoincrement=True,
        **_MYSQL,
    )
    version = Table(
        f"{p}schema_version",
        md,
        Column("version", Integer, primary_key=True, autoincrement=False),
        Column("description", String(255), nullable=False),
        Column("applied_at", UTCDateTime, nullable=False),
        **_MYSQL,
    )
    return Tables(
        metadata=md,
        prefix=prefix,
        schema=schema,
        tasks=tasks,
        tags=tags,
        logs=logs,
        counters=counters,
        queue=queue,
        instances=instances,
        locks=locks,
        readers=readers,
        run_keys=run_keys,
        events=events,
        version=version,
    )
