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
from typing import Any

from .context import TaskContext
from .errors import TaskCancelledError, TaskTimeoutError

__all__ = ["CancelScopes", "Scope", "enter", "failure", "leave"]

CANCEL, TIMEOUT = "cancel", "timeout"

_REMEMBER_SECONDS = 120.0
"""How long a cancellation request for a task not (yet) running here is remembered."""


class Scope:
    """One running attempt that can be interrupted (by its deadline or by a cancel)."""

    __slots__ = (
        "_cancelled_task",
        "active",
        "ctx",
        "is_async",
        "reason",
        "task",
        "timeout",
        "timer",
    )

    def __init__(self, ctx: TaskContext, task: asyncio.Task[Any], is_async: bool):
        self.ctx = ctx
        self.task = task
        self.is_async = is_async
        self.active = True
        self.reason: str | None = None
        self._cancelled_task = False
        self.timer: asyncio.TimerHandle | None = None
        self.timeout: float | None = None

    def interrupt(self, reason: str) -> None:
        """Stop the attempt for ``reason`` (call on the task's loop)."""
        if not self.active:
            return
        if reason == CANCEL:
            self.ctx.cancel_requested = True
            if not self.is_async:
                return  # a thread cannot be stopped: the task sees cancel_requested
        if self.reason is None:
            self.reason = reason
        if not self._cancelled_task:
            self._cancelled_task = True
            self.task.cancel(f"taskflow: {reason}")

    def settle(self) -> str | None:
        """End the attempt's interruptible span; return why it was interrupted, or None
        when the ``CancelledError`` (if any) came from elsewhere too (a shutdown)."""
        self.active = False
        if not self._cancelled_task:
            return self.reason
        uncancel = getattr(self.task, "uncancel", None)  # Python >= 3.11
        if uncancel is not None and uncancel() > 0:
            return None  # someone else cancelled the task as well
        return self.reason


class CancelScopes:
    """The attempts running on this instance, by task id, and early cancel requests."""

    def __init__(self) -> None:
        self.scopes: dict[str, Scope] = {}
        self.requested: dict[str, float] = {}

    def request(self, task_id: str) -> bool:
        """Cancel ``task_id`` if it runs here (True); else remember the request for a
        while, in case its attempt is just starting. Call on the engine's loop."""
        scope = self.scopes.get(task_id)
        if scope is not None:
            scope.interrupt(CANCEL)
            return True
        now = time.monotonic()
        if len(self.requested) > 1000:
            cutoff = now - _REMEMBER_SECONDS
            self.requested = {k: t for k, t in self.requested.items() if t > cutoff}
        self.requested[task_id] = now
        return False


def enter(
    scopes: CancelScopes,
    ctx: TaskContext,
    task: asyncio.Task[Any],
    is_async: bool,
    timeout: float | None,
) -> Scope:
    """Open the supervised span of one attempt running in ``task`` (``is_async``: it
    runs on the loop, not on a thread): its cancellation, and its deadline when
    ``timeout`` is set. The caller awaits the call, hands whatever it raised to
    :func:`failure`, and ends the span with :func:`leave`."""
    scope = Scope(ctx, task, is_async)
    # registered, and a cancel request that came first applied (inline: every
    # attempt passes here)
    scopes.scopes[ctx.task_id] = scope
    if scopes.requested and scopes.requested.pop(ctx.task_id, None) is not None:
        scope.interrupt(CANCEL)
    if timeout is not None:
        scope.timer = task.get_loop().call_later(timeout, scope.interrupt, TIMEOUT)
        scope.timeout = timeout
    return scope


def failure(scope: Scope, exc: BaseException) -> BaseException | None:
    """What the attempt of ``scope`` raises instead of ``exc`` (None: ``exc`` itself);
    see the module docstring. Call in the ``except`` clause that caught ``exc``, and
    raise what it returns there."""
    if isinstance(exc, asyncio.CancelledError):
        reason = scope.settle()
        error: BaseException
        if reason == TIMEOUT:
            assert scope.timeout is not None
            error = TaskTimeoutError(scope.timeout, sync=not scope.is_async)
        elif reason == CANCEL:
            error = TaskCancelledError(f"task {scope.ctx.task_id} was cancelled")
        else:
            return None
        error.__suppress_context__ = True  # raise ... from None
        return error
    if isinstance(exc, Exception):
        scope.settle()
        if scope.ctx.cancel_requested and not isinstance(exc, TaskCancelledError):
            cancelled = TaskCancelledError(f"task {scope.ctx.task_id} was cancelled")
            cancelled.__cause__ = exc
            return cancelled
    return None


def leave(scopes: CancelScopes, scope: Scope) -> None:
    """End the supervised span of an attempt (its deadline no longer applies)."""
    scope.active = False
    timer = scope.timer
    if timer is not None:
        timer.cancel()
    # forgotten (unless a later attempt of the task registered since)
    task_id = scope.ctx.task_id
    if scopes.scopes.get(task_id) is scope:
        del scopes.scopes[task_id]
