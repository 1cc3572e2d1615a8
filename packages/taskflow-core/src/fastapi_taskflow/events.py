"""Events: what observers receive and what backends fan out between instances.

Each event carries what changed (one task's new status, or one log line), never a whole
task list, so a dashboard stream stays small.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from .models import TaskRecord, TaskStatus

__all__ = [
    "BusEvent",
    "LifecycleEvent",
    "LogEvent",
    "TaskEvent",
    "bus_event_adapter",
    "lifecycle_event",
]


class TaskEvent(BaseModel):
    """Fields every event shares."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    func_name: str
    attempt: int = 0
    tags: dict[str, str] = Field(default_factory=dict)
    timestamp: datetime
    instance_id: str | None = None


class LifecycleEvent(TaskEvent):
    """A task changed status (``status`` is the new one; ``error`` is set on failures)."""

    type: Literal["lifecycle"] = "lifecycle"
    status: TaskStatus
    error: str | None = None
    queue: str = "default"
    priority: int = 0
    progress: float | None = None


class LogEvent(TaskEvent):
    """A task wrote a log line with ``task_log()``."""

    type: Literal["log"] = "log"
    level: str = "info"
    message: str
    extra: dict[str, Any] = Field(default_factory=dict)


BusEvent = Annotated[Union[LifecycleEvent, LogEvent], Field(discriminator="type")]
"""Either kind of event, as it travels over a backend's fan-out channel."""

bus_event_adapter: TypeAdapter[LifecycleEvent | LogEvent] = TypeAdapter(BusEvent)
"""Encodes and decodes :data:`BusEvent` to and from JSON (``validate_json``/``dump_json``)."""


def lifecycle_event(record: TaskRecord, instance_id: str) -> LifecycleEvent:
    """Build the lifecycle event announcing ``record``'s current status."""
    return LifecycleEvent(
        task_id=record.task_id,
        func_name=record.func_name,
        attempt=record.attempt,
        tags=record.tags,
        timestamp=record.updated_at,
        instance_id=instance_id,
        status=record.status,
        error=record.error if record.status is not TaskStatus.SUCCESS else None,
        queue=record.queue,
        priority=record.priority,
        progress=record.progress,
    )
