"""A MySQL/MariaDB write that failed because one value was larger than the server takes.

The server refuses a packet larger than its ``max_allowed_packet`` (16 MiB by default
on MariaDB, 64 MiB on MySQL 8) by closing the connection, and the driver reports a lost
connection ("server has gone away"): alone, that reads as an outage, and taskflow would
refuse every new task until the store "came back", retrying the oversized write for
ever. So when a write fails that way, the values it carried are measured (only then:
nothing is measured on the way in) and, if one is larger than the server's limit, the
write fails with :class:`ValueTooLargeError` instead: a refusal of that one task (its
request is answered 500, its result or log lines are not stored) while the store stays
available, and a batch it was part of is written again without it. The limit is read
when the backend opens, so telling the two apart needs no round trip to a server that
may be down.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

from sqlalchemy import text

from fastapi_taskflow.errors import BackendUnavailableError
from fastapi_taskflow.models import LogEntry, TaskRecord, TaskUpdate, Transition

from .context import SQLContext
from .errors import SQLBackendError
from .executor import connect, release
from .rows import log_values, record_values, update_values

__all__ = [
    "ValueTooLargeError",
    "entry_texts",
    "read_max_packet",
    "record_texts",
    "sized",
    "transition_texts",
    "update_texts",
]

T = TypeVar("T")

Texts = Callable[[], Iterable[tuple[str, str | None]]]
"""What a write carried that can be large: ``(what, text)`` pairs, ``what`` naming the
value for the message ("task 0190… args")."""

_SMALLEST_LIMIT = 1024
"""``max_allowed_packet``'s smallest setting: values below it are never the cause."""


class ValueTooLargeError(SQLBackendError):
    """A value of a task (its arguments, result, error or a log line) is larger than
    the MySQL/MariaDB server's ``max_allowed_packet``: the server refused it."""


async def sized(ctx: SQLContext, write: Awaitable[T], texts: Texts) -> T:
    """Await ``write``; on MySQL/MariaDB, a lost connection caused by a value of
    ``texts`` larger than the server takes becomes :class:`ValueTooLargeError`."""
    try:
        return await write
    except BackendUnavailableError as exc:
        if ctx.kind == "mysql":
            await _refuse_oversized(ctx, exc, texts)
        raise


async def _refuse_oversized(ctx: SQLContext, exc: BackendUnavailableError, texts: Texts) -> None:
    largest, what = 0, ""
    for name, value in texts():
        size = len(value.encode()) if value else 0
        if size > largest:
            largest, what = size, name
    if largest < _SMALLEST_LIMIT:
        return
    limit = ctx.max_packet  # read at open: no round trip to a server that may be down
    if limit is None:
        limit = ctx.max_packet = await read_max_packet(ctx)
    if limit is None or largest < limit:
        return  # the server is not there, or the value was not the cause: an outage
    raise ValueTooLargeError(
        f"{what} take {largest:,} bytes as stored, more than the database server accepts "
        f"in one value (max_allowed_packet = {limit:,} bytes). Keep large data elsewhere "
        "(a file, object storage) and pass a reference to it, or raise max_allowed_packet "
        "on the server"
    ) from exc


async def read_max_packet(ctx: SQLContext) -> int | None:
    """The server's ``max_allowed_packet``, or None when it cannot be read now."""
    try:
        conn = await connect(ctx, write=False)
        try:
            value = await conn.scalar(text("SELECT @@max_allowed_packet"))
        finally:
            await release(conn)
    except Exception:
        return None
    return int(value) if value is not None else None


_LARGE_FIELDS = ("args", "kwargs", "tags", "result", "error")
"""The stored fields of a task row that can be large."""


def record_texts(records: Sequence[TaskRecord]) -> Iterable[tuple[str, str | None]]:
    """The stored texts of new records that can be large (as ``record_values`` stores
    them)."""
    for record in records:
        values = record_values(record)
        for name in _LARGE_FIELDS:
            yield f"task {record.task_id}'s {name}", values[name]


def update_texts(
    changes: Iterable[tuple[str, TaskUpdate | None]],
) -> Iterable[tuple[str, str | None]]:
    """The stored texts of status changes (``(task id, update)``) that can be large."""
    for task_id, update in changes:
        if update is not None:
            values = update_values(update.changes())
            for name in _LARGE_FIELDS:
                if name in values:
                    yield f"task {task_id}'s {name}", values[name]


def transition_texts(transitions: Sequence[Transition]) -> Iterable[tuple[str, str | None]]:
    """:func:`update_texts` of a batch of transitions."""
    return update_texts((item.task_id, item.update) for item in transitions)


def entry_texts(task_id: str, entries: Sequence[LogEntry]) -> Iterable[tuple[str, str | None]]:
    """The stored texts of log lines that can be large (as ``log_values`` stores them)."""
    for entry in entries:
        values = log_values(task_id, entry)
        yield f"a log line of task {task_id}", values["message"]
        yield f"a log line of task {task_id}", values["extra"]
