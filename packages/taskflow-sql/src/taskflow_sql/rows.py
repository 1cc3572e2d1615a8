"""Converting between :class:`TaskRecord` and rows of the ``tasks`` table."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from pydantic import ValidationError
from pydantic_core import to_json
from sqlalchemy import Table

from fastapi_taskflow.isotime import parse_iso
from fastapi_taskflow.models import (
    ACTIVE_STATUSES,
    KEY_RELEASING_STATUSES,
    LogEntry,
    TaskRecord,
    TaskStatus,
    construct,
    copy_with,
)
from fastapi_taskflow.redaction import mask_log_records

from .schema import TAG_LENGTH, Tables

__all__ = [
    "dumps",
    "fast_record",
    "key_hash",
    "loads",
    "log_values",
    "record_columns",
    "record_values",
    "row_to_log",
    "sqlite_reader",
    "row_to_record",
    "tag_token",
    "update_values",
]

logger = mask_log_records(logging.getLogger("taskflow_sql"))

_JSON_FIELDS = ("args", "kwargs", "result")


def dumps(value: Any) -> str | None:
    """Encode ``value`` as JSON text (pydantic's encoder); None stays NULL."""
    if value is None:
        return None
    return to_json(value).decode()


def loads(text: str | None) -> Any:
    """Decode JSON text; NULL is None."""
    if text is None:
        return None
    # The commonest values (no kwargs, no tags, no result) without the JSON decoder;
    # each call still returns a fresh object.
    if text == "{}":
        return {}
    if text == "null":
        return None
    if text == "[]":
        return []
    return json.loads(text)


def key_hash(key: str) -> str:
    """Return the SHA-256 hex digest stored for an idempotency or run key."""
    return hashlib.sha256(key.encode()).hexdigest()


def tag_token(text: str) -> str:
    """Return how a tag key or value is stored in ``task_tags`` (long ones hashed)."""
    if len(text) <= TAG_LENGTH:
        return text
    return "#sha256:" + key_hash(text)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _is_utc(value: datetime | None) -> bool:
    return value is None or value.tzinfo is timezone.utc


def record_values(record: TaskRecord) -> dict[str, Any]:
    """Return the ``tasks`` row for a new record."""
    holds_key = record.idempotency_key is not None and record.status not in KEY_RELEASING_STATUSES
    return {
        "task_id": record.task_id,
        "func_name": record.func_name,
        "status": record.status.value,
        "prev_status": None,
        "queue": record.queue,
        "priority": record.priority,
        "args": dumps(record.args),
        "kwargs": dumps(record.kwargs),
        "tags": dumps(record.tags) or "{}",
        "idempotency_key": record.idempotency_key,
        "active_key": key_hash(record.idempotency_key) if holds_key else None,  # type: ignore[arg-type]
        "attempt": record.attempt,
        "max_retries": record.max_retries,
        "requeue_on_interrupt": record.requeue_on_interrupt,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "error": record.error,
        "result": dumps(record.result),
        "progress": record.progress,
        "cancel_requested": record.cancel_requested,
        "owner": record.owner,
        "active_owner": record.owner if record.status in ACTIVE_STATUSES else None,
    }


def normalized(record: TaskRecord) -> TaskRecord:
    """Return ``record`` as it reads back from the database (UTC datetimes, no logs):
    ``record`` itself when it already is (the engine's new records), else a copy."""
    if not record.logs and (
        _is_utc(record.created_at)
        and _is_utc(record.updated_at)
        and _is_utc(record.started_at)
        and _is_utc(record.finished_at)
    ):
        return record
    return copy_with(
        record,
        {
            "created_at": _utc(record.created_at),
            "updated_at": _utc(record.updated_at),
            "started_at": _utc(record.started_at),
            "finished_at": _utc(record.finished_at),
            "logs": [],
        },
    )


def update_values(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Map :meth:`TaskUpdate.changes` onto ``tasks`` columns."""
    values = dict(changes)
    if "result" in values:
        values["result"] = dumps(values["result"])
    return values


_HIDDEN = frozenset({"active_key", "active_owner"})


def record_columns(tables: Tables) -> list[Any]:
    """The ``tasks`` columns a record is read from."""
    return list(_record_columns(tables.tasks))


@lru_cache(maxsize=64)
def _record_columns(tasks: Table) -> tuple[Any, ...]:
    return tuple(column for column in tasks.c if column.name not in _HIDDEN)


def _record_fields(row: Mapping[Any, Any]) -> dict[str, Any]:
    """The ``TaskRecord`` fields of a ``tasks`` row, decoded (JSON columns, status)."""
    return {
        "task_id": row["task_id"],
        "func_name": row["func_name"],
        "status": TaskStatus(row["status"]),
        "queue": row["queue"],
        "priority": row["priority"],
        "args": loads(row["args"]),
        "kwargs": loads(row["kwargs"]),
        "tags": loads(row["tags"]) or {},
        "idempotency_key": row["idempotency_key"],
        "attempt": row["attempt"],
        "max_retries": row["max_retries"],
        "requeue_on_interrupt": bool(row["requeue_on_interrupt"]),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "error": row["error"],
        "result": loads(row["result"]),
        "progress": row["progress"],
        "cancel_requested": bool(row["cancel_requested"]),
        "owner": row["owner"],
    }


def row_to_record(row: Mapping[Any, Any]) -> TaskRecord | None:
    """Build a record from a ``tasks`` row; None (and an error logged) if it is corrupt."""
    try:
        return TaskRecord(**_record_fields(row))
    except (ValidationError, ValueError, TypeError, KeyError) as exc:
        logger.error("skipping corrupt task row %r: %s", dict(row).get("task_id", "?"), exc)
        return None


def fast_record(row: Mapping[Any, Any]) -> TaskRecord | None:
    """Build a record from a row this backend wrote, without pydantic validation.

    For the hot paths (transitions, ``get``): every value already has its type (the
    columns' processors made the datetimes aware UTC), so validating again would only
    cost time. A row whose status or JSON does not decode goes to :func:`row_to_record`,
    which logs it and returns None.
    """
    try:
        return construct(TaskRecord, **_record_fields(row))
    except (ValueError, TypeError, KeyError):
        return row_to_record(row)


def log_values(task_id: str, entry: LogEntry) -> dict[str, Any]:
    """Return the ``task_logs`` row for one entry."""
    return {
        "task_id": task_id,
        "timestamp": entry.timestamp,
        "level": entry.level,
        "message": entry.message,
        "attempt": entry.attempt,
        "extra": dumps(entry.extra) if entry.extra else None,
    }


def row_to_log(row: Mapping[Any, Any]) -> LogEntry | None:
    """Build a log entry from a ``task_logs`` row; None if it is corrupt."""
    try:
        return LogEntry(
            timestamp=row["timestamp"],
            level=row["level"],
            message=row["message"],
            attempt=row["attempt"],
            extra=loads(row["extra"]) or {},
        )
    except (ValidationError, ValueError, TypeError) as exc:
        logger.error("skipping corrupt log row of task %r: %s", row.get("task_id", "?"), exc)
        return None


_STATUSES = {status.value: status for status in TaskStatus}


def _sqlite_moment(text: Any) -> datetime | None:
    """A stored SQLite datetime (naive UTC ISO text) as an aware UTC datetime."""
    if text is None:
        return None
    moment = parse_iso(text) if isinstance(text, str) else text
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def sqlite_reader(
    columns: Sequence[Any], slow: Callable[[Sequence[Any]], Mapping[str, Any]]
) -> Callable[[Sequence[Any]], TaskRecord | None]:
    """Build records straight from the stdlib ``sqlite3`` rows of ``columns``.

    What :func:`fast_record` makes of the processed row, without the intermediate
    mappings: this runs for every row of every grouped write on SQLite. A row that
    does not decode goes through ``slow`` (the columns' own processors) to
    :func:`row_to_record`, which logs it and returns None.
    """
    at = {column.name: index for index, column in enumerate(columns)}
    (
        task_id, func_name, status, queue, priority, args, kwargs, tags, key, attempt,
        retries, requeue, created, updated, started, finished, error, result, progress,
        cancel, owner,
    ) = (at[name] for name in _RECORD_FIELDS)  # fmt: skip
    moment = _sqlite_moment

    def read(row: Sequence[Any]) -> TaskRecord | None:
        try:
            return construct(
                TaskRecord,
                task_id=row[task_id],
                func_name=row[func_name],
                status=_STATUSES[row[status]],
                queue=row[queue],
                priority=row[priority],
                args=loads(row[args]),
                kwargs=loads(row[kwargs]),
                tags=loads(row[tags]) or {},
                idempotency_key=row[key],
                attempt=row[attempt],
                max_retries=row[retries],
                requeue_on_interrupt=bool(row[requeue]),
                created_at=moment(row[created]),
                updated_at=moment(row[updated]),
                started_at=moment(row[started]),
                finished_at=moment(row[finished]),
                error=row[error],
                result=loads(row[result]),
                progress=row[progress],
                cancel_requested=bool(row[cancel]),
                owner=row[owner],
            )
        except (ValueError, TypeError, KeyError):
            return row_to_record(slow(row))

    return read


_RECORD_FIELDS = (
    "task_id",
    "func_name",
    "status",
    "queue",
    "priority",
    "args",
    "kwargs",
    "tags",
    "idempotency_key",
    "attempt",
    "max_retries",
    "requeue_on_interrupt",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "error",
    "result",
    "progress",
    "cancel_requested",
    "owner",
)
