"""What a running task knows about itself: ``get_task_context()`` and ``task_log()``."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from typing import Any

from .clock import Clock
from .errors import InvalidTaskError, TaskCancelledError
from .limits import LOG_LINES_MAX, LOG_MESSAGE_MAX, cut_text
from .models import LogEntry, LogLine, construct, log_entry, log_line

__all__ = ["ENTRIES_LOCK", "LEVELS", "TaskContext", "get_task_context", "task_log"]

LEVELS = ("debug", "info", "warning", "error", "critical")
"""The log levels ``task_log()`` accepts."""


ENTRIES_LOCK = threading.Lock()
"""Guards every context's unwritten log lines and its progress reporter's creation (a
sync task logs from a thread while the loop takes the lines): one lock for all, held
for an append or a swap, instead of one lock per attempt."""


class TaskContext:
    """The running task: available inside a task function through ``get_task_context()``.

    Attributes:
        task_id: the id ``add_task()`` returned.
        func_name: the task's registered name.
        attempt: which attempt this is, starting at 1.
        tags: the tags given to ``add_task()``.
        cancel_requested: True once ``task_manager.cancel()`` was called for this task
            (from any instance), and, for a sync task, once a shutdown's
            ``shutdown_timeout`` has run out while it runs. An async task is cancelled
            at its next ``await``; a sync one cannot be, so it should check this (or
            call :meth:`raise_if_cancelled`) between steps and stop.
    """

    __slots__ = (
        "_clock",
        "_entries",
        "_logged",
        "_loop",
        "_on_log",
        "_own_tags",
        "_reporter",
        "_tags",
        "_wiring",
        "attempt",
        "cancel_requested",
        "func_name",
        "task_id",
    )

    def __init__(
        self,
        task_id: str,
        func_name: str,
        attempt: int,
        tags: Mapping[str, str] | None = None,
        cancel_requested: bool = False,
        _clock: Clock | None = None,
        _on_log: Callable[[TaskContext, LogEntry], None] | None = None,
        _wiring: Any = None,
        _loop: Any = None,
    ) -> None:
        self.task_id = task_id
        self.func_name = func_name
        self.attempt = attempt
        self._tags = tags
        """The tags as given, copied on first read of :attr:`tags` (most tasks never
        read them) into ``_own_tags``."""
        self._own_tags: dict[str, str] | None = None
        self.cancel_requested = cancel_requested
        self._clock = _clock
        self._on_log = _on_log
        self._entries: list[LogLine] | None = None
        self._logged = 0
        """How many lines this attempt logged through :meth:`log` (the first
        :data:`~fastapi_taskflow.limits.LOG_LINES_MAX` are stored)."""
        self._wiring = _wiring
        """Where progress reports go (a ``progress.ProgressWiring``), None: nowhere."""
        self._loop = _loop
        self._reporter: Any = None
        """The attempt's ``progress.ProgressReporter``, made by the first report."""

    @property
    def tags(self) -> dict[str, str]:
        """The tags given to ``add_task()`` (this attempt's own copy)."""
        tags = self._own_tags
        if tags is None:
            tags = self._own_tags = dict(self._tags) if self._tags else {}
        return tags

    @tags.setter
    def tags(self, value: dict[str, str]) -> None:
        self._own_tags = value

    def __repr__(self) -> str:
        return (
            f"TaskContext(task_id={self.task_id!r}, func_name={self.func_name!r}, "
            f"attempt={self.attempt!r}, tags={self.tags!r}, "
            f"cancel_requested={self.cancel_requested!r})"
        )

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
        for name, value in extra.items():  # ``extra`` is this call's own dict
            if type(value) is str and len(value) > LOG_MESSAGE_MAX:
                extra[name] = cut_text(value, LOG_MESSAGE_MAX)
        self._logged += 1
        keep = self._logged <= LOG_LINES_MAX
        if not keep and self._logged == LOG_LINES_MAX + 1:
            self.line(
                f"this attempt logged more than {LOG_LINES_MAX:,} lines: the later ones "
                "are not stored (observers still receive them)",
                "warning",
                {},
            )
        line = self.line(cut_text(str(message), LOG_MESSAGE_MAX), level, extra, keep=keep)
        entry = construct(  # every value is of its field's type already: no validation
            LogEntry,
            timestamp=line[0],
            level=level,
            message=line[2],
            attempt=line[3],
            extra=extra,
        )
        if self._on_log is not None:
            self._on_log(self, entry)
        return entry

    def line(
        self, message: str, level: str, extra: dict[str, Any], *, keep: bool = True
    ) -> LogLine:
        """Record a log line without announcing it (only make it, when not ``keep``);
        return it (engine use: the engine's own lines, and what :meth:`log` builds
        on)."""
        if level not in LEVELS:
            raise InvalidTaskError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
        assert self._clock is not None
        line = log_line(self._clock.now(), level, str(message), self.attempt, extra)
        if keep:
            self.add_line(line)
        return line

    def add_line(self, line: LogLine) -> None:
        """Keep ``line`` with the lines written at the attempt's next write."""
        with ENTRIES_LOCK:
            entries = self._entries
            if entries is None:
                self._entries = [line]
            else:
                entries.append(line)

    def add_lines(self, *lines: LogLine) -> None:
        """Keep ``lines`` with the lines written at the attempt's next write (one lock
        for all of them)."""
        with ENTRIES_LOCK:
            entries = self._entries
            if entries is None:
                self._entries = list(lines)
            else:
                entries.extend(lines)

    def take_lines(self) -> list[LogLine] | None:
        """Return and forget the log lines written since the last call, None when there
        are none (engine use)."""
        if self._entries is None:
            return None
        with ENTRIES_LOCK:
            entries, self._entries = self._entries, None
        return entries

    def take_entries(self) -> list[LogEntry]:
        """Return and forget the log lines written since the last call, as ``LogEntry``
        (engine use)."""
        return [log_entry(line) for line in self.take_lines() or ()]


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
        message: the text of the line; its first
            :data:`~fastapi_taskflow.limits.LOG_MESSAGE_MAX` characters (10,000) are
            recorded, followed by how many more were cut (so are those of a text
            value of ``extra``; a list or object of ``extra`` whose JSON text is longer
            is stored as that text, cut). An attempt stores its first
            :data:`~fastapi_taskflow.limits.LOG_LINES_MAX` lines (10,000) and a warning
            line saying the later ones are not stored; observers receive every line.
        level: one of ``debug``, ``info``, ``warning``, ``error``, ``critical``.
        **extra: structured fields (JSON-encodable), e.g. ``user_id=42``.
    """
    ctx = _current.get()
    if ctx is not None:
        ctx.log(message, level, **extra)


bind: Callable[[TaskContext | None], Token[TaskContext | None]] = _current.set
"""Make a task context the current one; returns a token for :func:`unbind`. (The
context variable's own method: no Python frame around it, for every attempt.)"""

unbind: Callable[[Token[TaskContext | None]], None] = _current.reset
"""Restore the task context that was current before :func:`bind`."""
