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
    "decode_bus_event",
    "encode_bus_event",
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


def encode_bus_event(event: LifecycleEvent | LogEvent) -> str:
    """The form an event travels in between instances: the id of the instance that
    published it, a newline, then its JSON (``bus_event_adapter``). A subscriber can
    so leave out its own instance's events without decoding them (see
    :func:`decode_bus_event`). An id that would break that form (a newline in it, or a
    leading ``{``) leaves the JSON alone, which every subscriber still decodes."""
    body = bus_event_adapter.dump_json(event).decode()
    publisher = event.instance_id or ""
    if "\n" in publisher or publisher.startswith("{"):
        return body
    return f"{publisher}\n{body}"


def decode_bus_event(
    payload: str | bytes, skip_instance: str | None = None
) -> LifecycleEvent | LogEvent | None:
    """The event ``payload`` carries (:func:`encode_bus_event`'s form, or bare JSON), or
    None when ``skip_instance`` published it (nothing is decoded then).

    Raises:
        pydantic.ValidationError: ``payload`` is not a taskflow event.
    """
    text = payload.decode() if isinstance(payload, bytes) else payload
    if not text.startswith("{"):
        publisher, _, text = text.partition("\n")
        if skip_instance is not None and publisher == skip_instance:
            return None
    return bus_event_adapter.validate_json(text)
