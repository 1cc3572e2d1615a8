"""The JSON the commands print with ``--json`` (stable; documented in docs/cli.md).

The shapes match the admin API's: a task summary has the same fields as its
``TaskSummary``, a log line those of its ``Log``.
"""

from __future__ import annotations

from typing import Any

from ..admin.schemas import TaskSummary, summary_of
from ..events import LifecycleEvent, LogEvent
from ..models import LogEntry, TaskRecord

__all__ = ["SUMMARY_FIELDS", "event_json", "log_json", "task_detail", "task_summary"]

SUMMARY_FIELDS = tuple(TaskSummary.model_fields)
"""The fields of a task summary, in order (those of the admin API's ``TaskSummary``)."""


def task_summary(record: TaskRecord) -> dict[str, Any]:
    """A task without arguments, result or logs (what ``list`` prints per task)."""
    return summary_of(record).model_dump(mode="json")


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
