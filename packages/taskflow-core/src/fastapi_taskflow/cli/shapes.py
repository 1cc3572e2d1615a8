"""The JSON the commands print with ``--json`` (stable; documented in docs/cli.md).

The shapes match the admin API's: a task summary has the same fields as its
``TaskSummary``, a log line those of its ``Log``.
"""

from __future__ import annotations

from typing import Any

from ..events import LifecycleEvent, LogEvent
from ..models import LogEntry, TaskRecord

__all__ = ["SUMMARY_FIELDS", "event_json", "log_json", "task_detail", "task_summary"]

SUMMARY_FIELDS = (
    "task_id",
    "func_name",
    "status",
    "queue",
    "priority",
    "tags",
    "attempt",
    "max_retries",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "duration_seconds",
    "error",
    "progress",
    "idempotency_key",
    "owner",
)


def task_summary(record: TaskRecord) -> dict[str, Any]:
    """A task without arguments, result or logs (what ``list`` prints per task)."""
    data = record.model_dump(
        mode="json", exclude={"args", "kwargs", "result", "logs", "requeue_on_interrupt"}
    )
    duration = None
    if record.started_at is not None and record.finished_at is not None:
        duration = (record.finished_at - record.started_at).total_seconds()
    data["duration_seconds"] = duration
    return {name: data.get(name) for name in SUMMARY_FIELDS}


def log_json(entry: LogEntry) -> dict[str, Any]:
    """One log line: timestamp, level, message, attempt, extra."""
    return entry.model_dump(mode="json")


def task_detail(record: TaskRecord) -> dict[str, Any]:
    """A task with its arguments, result and logs (what ``show`` prints)."""
    data = task_summary(record)
    data["args"] = record.args
    data["kwargs"] = record.kwargs
    data["result"] = record.model_dump(mode="json", include={"result"})["result"]
    data["logs"] = [log_json(entry) for entry in record.logs]
    return data


def event_json(event: LifecycleEvent | LogEvent) -> dict[str, Any]:
    """An event as published by the engine (``type`` is ``lifecycle`` or ``log``)."""
    return event.model_dump(mode="json")
