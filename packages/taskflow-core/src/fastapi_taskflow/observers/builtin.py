"""Built-in observers: stdout, file, in-memory and stdlib logging."""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import TextIO

from ..events import LifecycleEvent, LogEvent
from .base import BaseObserver

__all__ = ["FileObserver", "LoggingObserver", "MemoryObserver", "StdoutObserver"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


class StdoutObserver(BaseObserver):
    """Writes every event as one JSON line to a text stream (stdout by default).

    Args:
        stream: where to write; defaults to ``sys.stdout`` at the time of each write.
        lifecycle: include lifecycle events (True) or only log lines (False).
    """

    def __init__(self, stream: TextIO | None = None, *, lifecycle: bool = True) -> None:
        self._stream = stream
        self._lifecycle = lifecycle

    def _write(self, line: str) -> None:
        stream = self._stream or sys.stdout
        stream.write(line + "\n")
        stream.flush()

    async def on_lifecycle(self, event: LifecycleEvent) -> None:
        """Write the lifecycle event as JSON."""
        if self._lifecycle:
            self._write(event.model_dump_json())

    async def on_log(self, event: LogEvent) -> None:
        """Write the log event as JSON."""
        self._write(event.model_dump_json())


class FileObserver(BaseObserver):
    """Appends every event as one JSON line to a file.

    Args:
        path: the file; created if missing, appended to otherwise.
        lifecycle: include lifecycle events (True) or only log lines (False).
    """

    def __init__(self, path: str | Path, *, lifecycle: bool = True) -> None:
        self.path = Path(path)
        self._lifecycle = lifecycle
        self._lock = threading.Lock()

    def _write(self, line: str) -> None:
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    async def on_lifecycle(self, event: LifecycleEvent) -> None:
        """Append the lifecycle event as JSON."""
        if self._lifecycle:
            self._write(event.model_dump_json())

    async def on_log(self, event: LogEvent) -> None:
        """Append the log event as JSON."""
        self._write(event.model_dump_json())


class MemoryObserver(BaseObserver):
    """Keeps every event in a list; made for tests.

    Args:
        remote_events: also keep the events of tasks run by other instances.

    Attributes:
        events: all events, in the order they arrived.
    """

    def __init__(self, *, remote_events: bool = False) -> None:
        self.events: list[LifecycleEvent | LogEvent] = []
        self.remote_events = remote_events

    @property
    def lifecycle_events(self) -> list[LifecycleEvent]:
        """Only the lifecycle events."""
        return [e for e in self.events if isinstance(e, LifecycleEvent)]

    @property
    def log_events(self) -> list[LogEvent]:
        """Only the log events."""
        return [e for e in self.events if isinstance(e, LogEvent)]

    def for_task(self, task_id: str) -> list[LifecycleEvent | LogEvent]:
        """The events of one task."""
        return [e for e in self.events if e.task_id == task_id]

    async def on_lifecycle(self, event: LifecycleEvent) -> None:
        """Keep the event."""
        self.events.append(event)

    async def on_log(self, event: LogEvent) -> None:
        """Keep the event."""
        self.events.append(event)


class LoggingObserver(BaseObserver):
    """Sends events to a stdlib logger, with the event's fields in ``extra["taskflow"]``.

    Args:
        logger: the logger to use; defaults to ``logging.getLogger("fastapi_taskflow.tasks")``.
        lifecycle_level: the level of lifecycle records (failures use ERROR).
    """

    def __init__(
        self, logger: logging.Logger | None = None, *, lifecycle_level: int = logging.INFO
    ) -> None:
        self.logger = logger or logging.getLogger("fastapi_taskflow.tasks")
        self.lifecycle_level = lifecycle_level

    async def on_lifecycle(self, event: LifecycleEvent) -> None:
        """Log ``task <name> <id> -> <status>``."""
        level = logging.ERROR if event.error else self.lifecycle_level
        self.logger.log(
            level,
            "task %s %s -> %s",
            event.func_name,
            event.task_id,
            event.status.value,
            extra={"taskflow": event.model_dump(mode="json")},
        )

    async def on_log(self, event: LogEvent) -> None:
        """Log the task's line at its own level."""
        self.logger.log(
            _LEVELS.get(event.level, logging.INFO),
            event.message,
            extra={"taskflow": event.model_dump(mode="json")},
        )
