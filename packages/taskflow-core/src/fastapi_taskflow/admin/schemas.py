"""What the admin API answers: pydantic models, so every route is described in OpenAPI.

Everything a task contributes (arguments, tags, log text, errors, function names) is a
JSON string or value here, never markup: the API never returns HTML built from task data.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
)

from ..events import LifecycleEvent, LogEvent
from ..models import LogEntry, SearchText, TaskRecord, TaskStatus
from ..progress import PROGRESS_FIELD

__all__ = [
    "Attempt",
    "Timestamp",
    "DurationSummary",
    "ErrorBody",
    "LifecycleMessage",
    "Log",
    "LogMessage",
    "PurgeRequest",
    "PurgeResult",
    "RetryFailedRequest",
    "RetryFailedResult",
    "Stats",
    "TaskDetail",
    "TaskList",
    "TaskSummary",
    "ThroughputPoint",
    "attempts_of",
    "detail_of",
    "lifecycle_message",
    "log_message",
    "summary_of",
]


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})")


def _rfc3339(value: Any) -> Any:
    """Accept only a date-time with its offset (``2030-01-01T12:00:00Z``) or an aware
    datetime.

    pydantic alone would also read a number as a Unix time, or a time without an offset
    as local: both are ambiguous in a filter, so they are refused with a clear message.
    """
    if isinstance(value, datetime) and value.utcoffset() is not None:
        return value
    if isinstance(value, str) and _RFC3339.fullmatch(value):
        return value
    raise ValueError(
        "expected an RFC 3339 date-time with an offset, for example 2030-01-01T12:00:00Z"
    )


def _in_utc(value: datetime) -> datetime:
    """The bound in UTC, as every store compares it; one that leaves the range of a
    datetime once in UTC (``9999-12-31T23:59:59-23:59``) is refused."""
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError(
            "date-time out of range once converted to UTC: expected one between "
            "0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z"
        ) from None


Timestamp = Annotated[datetime, BeforeValidator(_rfc3339), AfterValidator(_in_utc)]
"""A filter bound: an RFC 3339 date-time with its UTC offset, converted to UTC."""


class ErrorBody(BaseModel):
    """The body of every error answer: ``{"detail": "what went wrong and what to do"}``."""

    detail: str


class TaskSummary(BaseModel):
    """One row of the task list."""

    task_id: str
    func_name: str
    status: TaskStatus
    queue: str
    priority: int
    tags: dict[str, str]
    attempt: int
    max_retries: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None = Field(
        description="finished_at - started_at, when both are set"
    )
    error: str | None
    progress: float | None
    idempotency_key: str | None
    owner: str | None


class Log(BaseModel):
    """One log line of a task."""

    timestamp: datetime
    level: str
    message: str
    attempt: int
    extra: dict[str, Any]


class Attempt(BaseModel):
    """One attempt of a task: how it ended, with its error and traceback if it failed."""

    attempt: int = Field(description="1, 2, ... within its run")
    run: int = Field(
        default=1,
        description="1 for the task's first run; each retry (admin, command line) starts "
        "the next, whose attempts count from 1 again",
    )
    started_at: datetime | None = None
    finished_at: datetime | None = None
    status: str = Field(description="a task status, or 'failed' for a retried attempt")
    error: str | None = None
    traceback: str | None = None


class TaskDetail(TaskSummary):
    """One task with its logs and attempts; arguments and result only with display_args."""

    args: list[Any] | None = Field(description="null unless TaskAdmin(display_args=True)")
    kwargs: dict[str, Any] | None = Field(description="null unless display_args=True")
    result: Any = Field(default=None, description="null unless display_args=True")
    logs: list[Log]
    attempts: list[Attempt]


class TaskList(BaseModel):
    """One page of the task list; pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[TaskSummary]
    next_cursor: str | None


class DurationSummary(BaseModel):
    """Run time percentiles of one function, in seconds (nearest-rank)."""

    count: int
    p50: float
    p95: float
    p99: float


class ThroughputPoint(BaseModel):
    """Tasks that finished in one time bucket (every bucket of the window is listed)."""

    bucket_start: datetime
    succeeded: int
    failed: int


class Stats(BaseModel):
    """Aggregates computed by the store (never by loading tasks)."""

    total: int
    by_status: dict[str, int]
    by_func: dict[str, dict[str, int]]
    durations: dict[str, DurationSummary]
    throughput: list[ThroughputPoint]
    bucket_seconds: int
    queues: dict[str, int] = Field(description="tasks waiting on each known queue")


class TaskFilter(BaseModel):
    """Which tasks a bulk action applies to; every field is optional (AND)."""

    model_config = ConfigDict(extra="forbid")

    status: list[TaskStatus] | None = None
    func: str | None = None
    queue: str | None = None
    tag: list[str] | None = Field(default=None, description="'key:value' pairs")
    created_after: Timestamp | None = None
    created_before: Timestamp | None = None
    q: SearchText | None = None


class RetryFailedRequest(TaskFilter):
    """Retry every FAILED task matching the filter (``status`` may name INTERRUPTED or
    CANCELLED instead)."""


class RetryFailedResult(BaseModel):
    """The ids retried; ``stopped`` says why it stopped early (a full queue), if it did."""

    task_ids: list[str]
    stopped: str | None = None


class PurgeRequest(BaseModel):
    """Delete finished tasks that finished more than ``older_than_seconds`` ago."""

    model_config = ConfigDict(extra="forbid")

    older_than_seconds: Annotated[float, Strict()] = Field(
        ge=0, le=100 * 365 * 86400, allow_inf_nan=False
    )


class PurgeResult(BaseModel):
    """How many tasks were deleted."""

    purged: int


class LifecycleMessage(BaseModel):
    """``event: lifecycle`` on the event stream: one task's new status."""

    task_id: str
    func_name: str
    status: TaskStatus
    attempt: int
    queue: str
    priority: int
    tags: dict[str, str]
    timestamp: datetime
    error: str | None
    progress: float | None
    instance: str | None


class LogMessage(BaseModel):
    """``event: log`` on the event stream: one log line of a task."""

    task_id: str
    func_name: str
    level: str
    message: str
    attempt: int
    timestamp: datetime
    progress: float | None = Field(
        default=None,
        description="the fraction done (0.0 to 1.0) this line reports (task_progress()); "
        "absent from other lines on the event stream",
    )


def summary_of(record: TaskRecord) -> TaskSummary:
    """The list row of ``record``."""
    duration = None
    if record.started_at is not None and record.finished_at is not None:
        duration = (record.finished_at - record.started_at).total_seconds()
    return TaskSummary(
        task_id=record.task_id,
        func_name=record.func_name,
        status=record.status,
        queue=record.queue,
        priority=record.priority,
        tags=record.tags,
        attempt=record.attempt,
        max_retries=record.max_retries,
        created_at=record.created_at,
        updated_at=record.updated_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        duration_seconds=duration,
        error=record.error,
        progress=record.progress,
        idempotency_key=record.idempotency_key,
        owner=record.owner,
    )


def _log(entry: LogEntry) -> Log:
    return Log(
        timestamp=entry.timestamp,
        level=entry.level,
        message=entry.message,
        attempt=entry.attempt,
        extra=entry.extra,
    )


def _retry_marker(entry: LogEntry) -> bool:
    """The ``retried by ...`` line a retry (admin, command line) writes: the task's
    attempt count restarts after it, so a new run begins."""
    return entry.attempt < 1 and entry.message.startswith(_RETRY_PREFIX)


_RETRY_PREFIX = "retried by "


def _close_run(run: dict[int, Attempt], marker: LogEntry) -> None:
    """A run ended by a retry: its last attempt, if no failure line ended it, takes the
    status (and error) the retry found the task in (``was INTERRUPTED`` ...)."""
    if not run:
        return
    last = run[max(run)]
    previous = marker.extra.get("previous_status")
    if last.status == "running" and previous in {s.value for s in TaskStatus}:
        last.status = str(previous)
        error = marker.extra.get("previous_error")
        if last.error is None and isinstance(error, str):
            last.error = error


def attempts_of(record: TaskRecord) -> list[Attempt]:
    """Every attempt of ``record``, run by run, from its logs and its current state.

    A failed attempt is the engine's ``attempt N failed: ...`` log entry (error and
    traceback). A retry (its ``retried by ...`` log entry) restarts the attempt count:
    the attempts after it form a new run (``run`` 2, 3, ...), so an earlier run's error
    never shows on a later one. The latest attempt of the latest run takes the task's own
    status, times and error.
    """
    runs: list[dict[int, Attempt]] = [{}]
    for entry in record.logs:
        if _retry_marker(entry):
            _close_run(runs[-1], entry)
            runs.append({})
            continue
        if entry.attempt < 1:
            continue
        attempt = runs[-1].setdefault(
            entry.attempt,
            Attempt(
                attempt=entry.attempt,
                run=len(runs),
                started_at=entry.timestamp,
                status="running",
            ),
        )
        prefix = f"attempt {entry.attempt} failed: "
        if entry.level == "error" and entry.message.startswith(prefix):
            attempt.status = TaskStatus.FAILED.value
            attempt.finished_at = entry.timestamp
            attempt.error = entry.message[len(prefix) :]
            trace = entry.extra.get("traceback")
            attempt.traceback = trace if isinstance(trace, str) else None
    current = runs[-1]
    if record.attempt >= 1:
        last = current.setdefault(
            record.attempt, Attempt(attempt=record.attempt, run=len(runs), status="running")
        )
        if record.started_at is not None:
            last.started_at = record.started_at
        if record.status is not TaskStatus.PENDING or last.status == "running":
            last.status = record.status.value
        if record.status.is_terminal:
            last.finished_at = record.finished_at
            if record.error is not None and last.error is None:
                last.error = record.error
    return [run[n] for run in runs for n in sorted(run)]


def detail_of(record: TaskRecord, *, display_args: bool) -> TaskDetail:
    """The detail view of ``record`` (fetched with its logs)."""
    summary = summary_of(record)
    return TaskDetail(
        **summary.model_dump(),
        args=record.args if display_args else None,
        kwargs=record.kwargs if display_args else None,
        result=record.result if display_args else None,
        logs=[_log(entry) for entry in record.logs],
        attempts=attempts_of(record),
    )


def lifecycle_message(event: LifecycleEvent) -> LifecycleMessage:
    """What the event stream sends for a status change."""
    return LifecycleMessage(
        task_id=event.task_id,
        func_name=event.func_name,
        status=event.status,
        attempt=event.attempt,
        queue=event.queue,
        priority=event.priority,
        tags=event.tags,
        timestamp=event.timestamp,
        error=event.error,
        progress=event.progress,
        instance=event.instance_id,
    )


def _progress_of(extra: dict[str, Any]) -> float | None:
    """The fraction a progress report carries in ``extra``; None for any other line."""
    value = extra.get(PROGRESS_FIELD)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and 0.0 <= value <= 1.0 else None


def log_message(event: LogEvent) -> LogMessage:
    """What the event stream sends for a log line: no ``extra`` (tracebacks stay in the
    detail view) but the ``progress`` a ``task_progress()`` report carries, so a running
    task's progress is live."""
    return LogMessage(
        task_id=event.task_id,
        func_name=event.func_name,
        level=event.level,
        message=event.message,
        attempt=event.attempt,
        timestamp=event.timestamp,
        progress=_progress_of(event.extra),
    )
