"""One attempt under supervision: its timeout, its cancellation, its progress reports.

The executor brackets a task's call with :func:`enter`, :func:`failure` and :func:`leave`
(inline, without a coroutine frame of its own). The attempt runs in the
executor's own asyncio task (no extra task per attempt); a deadline or a cancellation
request interrupts it by cancelling that asyncio task, and the ``CancelledError`` that
comes out of the call is turned into what happened:

* the ``timeout`` passed: :class:`~fastapi_taskflow.errors.TaskTimeoutError`, a failed
  attempt (retried if retries remain). A sync function cannot be stopped from outside:
  the await on its thread is abandoned, the thread runs on, and its late result is
  discarded;
* ``task_manager.cancel()``: :class:`~fastapi_taskflow.errors.TaskCancelledError`, which
  the executor records as ``CANCELLED``. An async task gets ``CancelledError`` at its
  next ``await``; a sync one only sees ``get_task_context().cancel_requested`` become
  True, and ends ``CANCELLED`` when it raises (``raise_if_cancelled()``) while it is;
* anything else (a shutdown) stays a ``CancelledError``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from .clock import Clock
from .context import TaskContext
from .errors import TaskCancelledError, TaskTimeoutError
from .models import LogEntry

__all__ = [
    "Attempt",
    "CancelScopes",
    "cancel_asked",
    "enter",
    "failure",
    "leave",
    "thread_started",
]

CANCEL, TIMEOUT = "cancel", "timeout"

_REMEMBER_SECONDS = 120.0
"""How long a cancellation request for a task not (yet) running here is remembered."""


class Attempt(TaskContext):
    """One attempt of a task: the context it sees (``get_task_context()``) and what
    supervises it (its deadline, its cancellation).

    One object per attempt for both jobs: the task function gets it as its
    :class:`~fastapi_taskflow.context.TaskContext`, and the attempt's supervision is
    kept in its private slots, which nothing outside this module reads.

    Args:
        task: the asyncio task the attempt runs in (what an interruption cancels).
        is_async: the task function runs on the loop (a sync one runs on a thread,
            which cannot be stopped from outside).
        The others: those of :class:`~fastapi_taskflow.context.TaskContext`.
    """

    __slots__ = (
        "_cancel_asked",
        "_cancelled_task",
        "_is_async",
        "_open",
        "_reason",
        "_task",
        "_timeout",
        "_timer",
    )

    def __init__(
        self,
        task_id: str,
        func_name: str,
        attempt: int,
        tags: Mapping[str, str] | None,
        clock: Clock,
        on_log: Callable[[TaskContext, LogEntry], None] | None,
        wiring: Any,
        loop: asyncio.AbstractEventLoop,
        task: asyncio.Task[Any],
        is_async: bool,
    ) -> None:
        TaskContext.__init__(
            self, task_id, func_name, attempt, tags, False, clock, on_log, wiring, loop
        )
        self._task: asyncio.Task[Any] | None = task
        self._is_async = is_async
        self._open = True
        """The attempt can still be interrupted (until its call returned or failed)."""
        self._reason: str | None = None
        self._cancelled_task = False
        self._cancel_asked = False
        """``task_manager.cancel()`` reached the attempt (a shutdown's request to a
        thread only sets ``cancel_requested``)."""
        self._timer: asyncio.TimerHandle | None = None
        self._timeout: float | None = None

    def _interrupt(self, reason: str) -> None:
        """Stop the attempt for ``reason`` (call on the task's loop)."""
        if not self._open:
            return
        if reason == CANCEL:
            self.cancel_requested = True
            self._cancel_asked = True
            if not self._is_async:
                return  # a thread cannot be stopped: the task sees cancel_requested
        if self._reason is None:
            self._reason = reason
        task = self._task
        if not self._cancelled_task and task is not None:
            self._cancelled_task = True
            task.cancel(f"taskflow: {reason}")

    def _settle(self) -> str | None:
        """End the attempt's interruptible span; return why it was interrupted, or None
        when the ``CancelledError`` (if any) came from elsewhere too (a shutdown)."""
        self._open = False
        if not self._cancelled_task:
            return self._reason
        task = self._task
        uncancel = getattr(task, "uncancel", None)  # Python >= 3.11
        if uncancel is not None and uncancel() > 0:
            return None  # someone else cancelled the task as well
        return self._reason


class CancelScopes:
    """The attempts running on this instance, by task id, and early cancel requests."""

    def __init__(self) -> None:
        self.scopes: dict[str, Attempt] = {}
        self.requested: dict[str, float] = {}

    def request(self, task_id: str) -> bool:
        """Cancel ``task_id`` if it runs here (True); else remember the request for a
        while, in case its attempt is just starting. Call on the engine's loop."""
        attempt = self.scopes.get(task_id)
        if attempt is not None:
            attempt._interrupt(CANCEL)
            return True
        now = time.monotonic()
        if len(self.requested) > 1000:
            cutoff = now - _REMEMBER_SECONDS
            self.requested = {k: t for k, t in self.requested.items() if t > cutoff}
        self.requested[task_id] = now
        return False


def stop_threads(scopes: CancelScopes) -> None:
    """Ask every running sync attempt to stop: a shutdown's deadline passed. Its thread
    cannot be interrupted, so it sees ``cancel_requested`` (what ``raise_if_cancelled()``
    checks) and can stop itself; the attempt still ends INTERRUPTED, as every attempt
    the deadline cuts off. Async attempts are cancelled by the shutdown itself."""
    for attempt in scopes.scopes.values():
        if not attempt._is_async:
            attempt.cancel_requested = True


def enter(scopes: CancelScopes, attempt: Attempt, timeout: float | None) -> None:
    """Open the supervised span of ``attempt``: its cancellation, and its deadline when
    ``timeout`` is set. The caller awaits the call, hands whatever it raised to
    :func:`failure`, and ends the span with :func:`leave`."""
    # registered, and a cancel request that came first applied (inline: every
    # attempt passes here)
    task_id = attempt.task_id
    scopes.scopes[task_id] = attempt
    if scopes.requested and scopes.requested.pop(task_id, None) is not None:
        attempt._interrupt(CANCEL)
    if timeout is not None:
        attempt._timeout = timeout
        if attempt._is_async:
            attempt._timer = attempt._loop.call_later(timeout, attempt._interrupt, TIMEOUT)
        # a sync attempt's deadline starts with its thread (see thread_started): it may
        # first wait for a free thread of the pool, and that wait is not the attempt's


def thread_started(attempt: Attempt) -> None:
    """The thread of a sync ``attempt`` began running the function: start its deadline.
    Call on the attempt's loop (the thread hands it over with ``call_soon_threadsafe``);
    nothing happens once the attempt has ended."""
    if attempt._open and attempt._timeout is not None and attempt._timer is None:
        attempt._timer = attempt._loop.call_later(attempt._timeout, attempt._interrupt, TIMEOUT)


def failure(attempt: Attempt, exc: BaseException) -> BaseException | None:
    """What ``attempt`` raises instead of ``exc`` (None: ``exc`` itself); see the
    module docstring. Call in the ``except`` clause that caught ``exc``, and raise what
    it returns there."""
    if isinstance(exc, asyncio.CancelledError):
        reason = attempt._settle()
        error: BaseException
        if reason == TIMEOUT:
            assert attempt._timeout is not None
            error = TaskTimeoutError(attempt._timeout, sync=not attempt._is_async)
            if attempt._cancel_asked:  # a sync task cancelled, then out of time: final
                return _cancelled(attempt, error)
        elif reason == CANCEL:
            error = TaskCancelledError(f"task {attempt.task_id} was cancelled")
        else:
            return None
        error.__suppress_context__ = True  # raise ... from None
        return error
    if not isinstance(exc, KeyboardInterrupt):  # an Exception, SystemExit, a library's
        attempt._settle()
        if attempt.cancel_requested and not isinstance(exc, TaskCancelledError):
            return _cancelled(attempt, exc)
    return None


def _cancelled(attempt: Attempt, cause: BaseException) -> TaskCancelledError:
    """The error ending a cancelled attempt that stopped by raising ``cause``."""
    cancelled = TaskCancelledError(f"task {attempt.task_id} was cancelled")
    cancelled.__cause__ = cause
    return cancelled


def cancel_asked(context: TaskContext) -> bool:
    """True when ``task_manager.cancel()`` reached the attempt of ``context``: however
    it ends now (a shutdown interrupting it included), it ends CANCELLED, never
    retried nor run again."""
    return isinstance(context, Attempt) and context._cancel_asked


def leave(scopes: CancelScopes, attempt: Attempt) -> None:
    """End the supervised span of ``attempt`` (its deadline no longer applies, and it
    no longer holds its asyncio task). A call that returned although the attempt was
    interrupted leaves no cancellation behind on the asyncio task."""
    if attempt._open:  # the call returned (``failure`` settled the others)
        attempt._settle()
    attempt._task = None
    timer = attempt._timer
    if timer is not None:
        timer.cancel()
    # forgotten (unless a later attempt of the task registered since)
    task_id = attempt.task_id
    if scopes.scopes.get(task_id) is attempt:
        del scopes.scopes[task_id]
