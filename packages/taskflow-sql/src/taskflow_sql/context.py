"""What every part of the backend shares: engine, tables, clock, and the transaction."""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fastapi_taskflow.clock import Clock
from fastapi_taskflow.models import TaskStatus

from .schema import Tables
from .urls import Kind

__all__ = ["ReadOp", "SQLContext", "SingleOp", "Tx", "WriteOp"]

T = TypeVar("T")


@dataclass
class SQLContext:
    """The shared state of one opened backend.

    Attributes:
        engine: the SQLAlchemy async engine (and its pool).
        kind: ``sqlite``, ``postgresql`` or ``mysql``.
        tables: the tables for this prefix/schema.
        clock: where every timestamp comes from.
        counter_slots: rows per ``(func_name, status)`` counter (1 on SQLite).
        max_packet: MySQL/MariaDB's ``max_allowed_packet``, read when the backend
            opened (None elsewhere, or when it could not be read): see
            :mod:`taskflow_sql.oversized`.
    """

    engine: AsyncEngine
    kind: Kind
    tables: Tables
    clock: Clock
    counter_slots: int
    max_packet: int | None = None

    @property
    def row_locks(self) -> bool:
        """True when the engine has ``SELECT … FOR UPDATE SKIP LOCKED`` (not SQLite)."""
        return self.kind != "sqlite"

    @property
    def update_returning(self) -> bool:
        """True when ``UPDATE … RETURNING`` works (PostgreSQL, SQLite; not MariaDB)."""
        return bool(self.engine.dialect.update_returning)


@dataclass
class Tx:
    """One write transaction: its connection and the counter changes it will make.

    Operations record counter changes with :meth:`count`; the transaction runner writes
    them all, in a fixed order, just before COMMIT (so a SQLite batch of a thousand
    transitions costs a few counter upserts, and PostgreSQL/MySQL transactions always
    lock counter rows in the same order).
    """

    ctx: SQLContext
    conn: AsyncConnection
    deltas: dict[tuple[str, str, int], int] = field(default_factory=dict)

    def count(self, func_name: str, task_id: str, status: TaskStatus | str, delta: int) -> None:
        """Add ``delta`` to the count of ``func_name`` tasks in ``status``."""
        slots = self.ctx.counter_slots
        slot = zlib.crc32(task_id.encode()) % slots if slots > 1 else 0
        key = (func_name, status.value if isinstance(status, TaskStatus) else status, slot)
        self.deltas[key] = self.deltas.get(key, 0) + delta

    def move(self, func_name: str, task_id: str, old: str, new: str) -> None:
        """Count one task moving from status ``old`` to ``new`` (:meth:`count` twice,
        inline: once per transition of every task)."""
        if old != new:
            slots = self.ctx.counter_slots
            slot = zlib.crc32(task_id.encode()) % slots if slots > 1 else 0
            deltas = self.deltas
            key = (func_name, old, slot)
            deltas[key] = deltas.get(key, 0) - 1
            key = (func_name, new, slot)
            deltas[key] = deltas.get(key, 0) + 1


WriteOp = Callable[[Tx], Awaitable[T]]
"""A unit of work run inside a write transaction."""

ReadOp = Callable[[AsyncConnection], Awaitable[T]]
"""A unit of work run inside a read transaction."""

SingleOp = Callable[[AsyncConnection], Awaitable[T]]
"""A write that is one statement, run on an autocommit connection (PostgreSQL, MySQL).

The statement is its own transaction: atomic, and durable once it returns. It saves
the ``BEGIN`` and ``COMMIT`` round trips of a :data:`WriteOp`."""
