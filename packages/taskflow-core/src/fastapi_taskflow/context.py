"""What a running task knows about itself: ``get_task_context()`` and ``task_log()``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from .clock import Clock
from .errors import TaskCancelledError
from .models import LogEntry, construct

__all__ = ["LEVELS", "TaskContext", "get_task_context", "task_log"]

LEVELS = ("debug", "info", "warning", "error", "critical")
"""The log levels ``task_log()`` accepts."""


@dataclass
class TaskContext:
    """The running task: available inside a task function through ``get_task_context()``.

    Attributes:
        task_id: the id ``add_task()`` returned.
        func_name: the task's registered name.
        attempt: which attempt this is, starting at 1.
        tags: the tags given to ``add_task()``.
        cancel_requested: True once ``task_manager.cancel()`` was called for this task
            (from any instance). An async task is cancelled at its next ``await``; a
            sync one cannot be, so it should check this (or call
            :meth:`raise_if_cancelled`) between steps and stop.
    """

    task_id: str
    func_name: str
    attempt: int
    tags: dict[str, str] = field(default_factory=dict)
    cancel_requested: bool = False
    _clock: Clock | None = field(default=None, repr=False)
    _on_log: Callable[[TaskContext, LogEntry], None] | None = field(default=None, repr=False)
    _entries: list[LogEntry] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _on_progress: Callable[[float, str | None], None] | None = field(default=None, repr=False)

    def raise_if_cancelled(self) -> None:
        """Raise ``TaskCancelledError`` if a cancellation of this task was requested.

        The way for a sync task to stop itself: call it between steps. The task then
        ends ``CANCELLED`` (final, never retried).
        """
        if self.cancel_requested:
            raise TaskCancelledError(f"task {self.task_id} was cancelled")

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report how far the task is; see :func:`fastapi_taskflow.progress.task_progress`."""
        from .progress import report

        report(self, fraction, message)

    def log(self, message: str, level: str = "info", **extra: Any) -> LogEntry:
        """Record a log line for this task; see :func:`task_log`."""
        if level not in LEVELS:
            raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
        assert self._clock is not None
        entry = construct(  # every value is of its field's type already: no validation
            LogEntry,
            timestamp=self._clock.now(),
            level=level,
            message=str(message),
            attempt=self.attempt,
            extra=extra,
        )
        with self._lock:
            self._entries.append(entry)
        if self._on_log is not None:
            self._on_log(self, entry)
        return entry

    def take_entries(self) -> list[LogEntry]:
        """Return and forget the log lines written since the last call (engine use)."""
        with self._lock:
            entries, self._entries = self._entries, []
        return entries


_current: ContextVar[TaskContext | None] = ContextVar("fastapi_taskflow_task", default=None)


def get_task_context() -> TaskContext | None:
    """Return the context of the task running in this call stack, or None outside a task.

    Works in async tasks and in sync tasks (which run in taskflow's thread pool).
    """
    return _current.get()


def task_log(message: str, level: str = "info", **extra: Any) -> None:
    """Write a structured log line for the running task.

    The line is stored with the task (``record.logs``) and sent to every observer as a
    ``LogEvent`` carrying the task's tags. Outside a task this does nothing, so helpers
    that log can also be called directly.

    Args:
        message: the text of the line.
        level: one of ``debug``, ``info``, ``warning``, ``error``, ``critical``.
        **extra: structured fields (JSON-encodable), e.g. ``user_id=42``.
    """
    ctx = _current.get()
    if ctx is not None:
        ctx.log(message, level, **extra)


def bind(ctx: TaskContext | None) -> Any:
    """Make ``ctx`` the current task context; returns a token for :func:`unbind`."""
    return _current.set(ctx)


def unbind(token: Any) -> None:
    """Restore the task context that was current before :func:`bind`."""
    _current.reset(token)
