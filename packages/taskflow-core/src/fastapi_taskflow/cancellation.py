"""Cancelling a task: ``task_manager.cancel(task_id)`` from any instance.

* A **PENDING** task (waiting to start, to be retried, or a one-off schedule) is moved
  to ``CANCELLED`` by a compare-and-set and taken off its queue: it never starts.
* A **RUNNING** task gets ``cancel_requested`` set on its record, and a cancellation
  request is sent through the backend's event fan-out (a ``LogEvent`` whose ``extra``
  carries ``taskflow_cancel``; dashboards see it as a log line). The instance running the
  task cancels it (see ``supervision``): an async task gets ``CancelledError`` at its
  next ``await``; a sync task sees ``get_task_context().cancel_requested`` and should
  stop itself. Without fan-out (``publish_events=False``) each instance polls the records
  of the tasks it runs instead.

The same watcher forgets the tasks accepted here that another instance started or
cancelled (they no longer wait in this instance's queue count): on their events, or
without fan-out by polling the records of the tasks waiting here.

``CANCELLED`` is final: never retried, never re-run after a crash. A cancelled task
keeps its idempotency key (only ``FAILED`` and ``REJECTED`` release one), so adding the
same key again returns the cancelled task's id: use a new key to run the work after all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import TaskflowError
from .events import LifecycleEvent, LogEvent
from .limits import check_lookup
from .models import TaskRecord, TaskStatus
from .operations import (
    CANCEL_MARK,
    cancel_if_pending,
    cancel_request_event,
    cancel_task_with,
    log_cancel_request,
)
from .protocols import TaskBackend
from .runtime import Runtime, reraise_if_cancelled

if TYPE_CHECKING:
    from .engine import Engine

__all__ = [
    "CANCEL_MARK",
    "cancel",
    "cancel_pending",
    "cancel_sync",
    "start_watcher",
]

logger = logging.getLogger("fastapi_taskflow")


async def cancel(engine: Engine, task_id: str) -> TaskRecord:
    """Cancel ``task_id``; see :meth:`fastapi_taskflow.TaskManager.cancel`."""
    check_lookup("task_id", task_id)
    backend = await engine.started_backend()  # or BackendUnavailableError
    await engine.flush()  # a task accepted a moment ago is in the store
    return await _cancel_with(engine, backend, task_id)


def cancel_sync(engine: Engine, task_id: str) -> TaskRecord:
    """Blocking :func:`cancel`, for ``def`` routes and scripts."""
    check_lookup("task_id", task_id)
    if len(engine.pending):
        engine.bridge.run(engine.pending.flush)
    return engine.bridge.run(lambda backend: _cancel_with(engine, backend, task_id))


async def cancel_pending(
    engine: Engine, backend: TaskBackend, record: TaskRecord
) -> TaskRecord | None:
    """Move a PENDING task to CANCELLED and off its queue; None if it was no longer
    PENDING. Cleans up what this instance held for it and announces the change."""
    done = await cancel_if_pending(
        backend,
        record.task_id,
        finished_at=engine.clock.now(),
        error="TaskCancelledError: cancelled before it started",
    )
    if done is not None:
        _on_engine_loop(engine, lambda: _forget_cancelled(engine, done))
    return done


async def _cancel_with(engine: Engine, backend: TaskBackend, task_id: str) -> TaskRecord:
    async def pending(record: TaskRecord) -> TaskRecord | None:
        return await cancel_pending(engine, backend, record)

    async def running(record: TaskRecord) -> None:
        await _signal(engine, backend, record)

    return await cancel_task_with(backend, task_id, pending=pending, running=running)


async def _signal(engine: Engine, backend: TaskBackend, record: TaskRecord) -> None:
    """Tell the instance running ``record`` to cancel it (this one, or through fan-out)."""
    event = cancel_request_event(
        record,
        timestamp=engine.clock.now(),
        sender=engine.instance_id,
        by=f"instance {engine.instance_id}",
    )
    try:
        await engine.availability.call(lambda: log_cancel_request(backend, event))
    except TaskflowError:  # the flag on the record is what stops the task
        logger.warning("the log line of task %s's cancellation was not stored", record.task_id)
    scopes = engine.cancel_scopes
    _on_engine_loop(engine, lambda: scopes.request(record.task_id))  # runs here?
    if engine.app_loop() is not None:
        # Observers and streams here, and the owner's watcher through the fan-out.
        _on_engine_loop(engine, lambda: _emit_soon(engine, event))
    elif engine.hub.publish:
        await backend.publish(event)


def _emit_soon(engine: Engine, event: LogEvent) -> None:
    runtime = engine.current_runtime
    if runtime is not None and runtime.usable:
        runtime.spawn(engine.hub.emit(event, signal=True))


def _forget_cancelled(engine: Engine, record: TaskRecord) -> None:
    """Drop this instance's in-process state of a task cancelled before it started,
    and announce it."""
    engine.forget(record.task_id)
    runtime = engine.current_runtime
    if runtime is not None and runtime.usable:
        runtime.spawn(engine.emit_lifecycle(record, signal=True))


def _on_engine_loop(engine: Engine, call: Callable[[], Any]) -> None:
    """Run ``call`` on the engine's loop (now if this is it); skip if it is not running."""
    runtime = engine.current_runtime
    if runtime is None or runtime.loop.is_closed():
        return
    try:
        current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        current = None
    if current is runtime.loop:
        call()
    else:
        runtime.loop.call_soon_threadsafe(call)


_TAKEN_ELSEWHERE = frozenset({TaskStatus.CANCELLED, TaskStatus.RUNNING})
WAITING_POLL_SLICE = 100
"""Without fan-out, how many waiting tasks' records the watcher reads per round."""


def start_watcher(engine: Engine, runtime: Runtime) -> None:
    """Start hook: on a shared backend, act on cancellation requests from any instance."""
    if engine.durable:
        runtime.spawn(_watch(engine), name="taskflow-cancellations")


async def _watch(engine: Engine) -> None:
    scopes = engine.cancel_scopes
    if engine.hub.publish:

        def concerns_cancellation(event: LifecycleEvent | LogEvent) -> bool:
            if isinstance(event, LogEvent):
                return bool(event.extra.get(CANCEL_MARK))
            return event.status in _TAKEN_ELSEWHERE and event.instance_id != engine.instance_id

        async with engine.hub.stream(only=concerns_cancellation, watcher=True) as events:
            async for event in events:
                if isinstance(event, LogEvent) and event.extra.get(CANCEL_MARK):
                    scopes.request(event.task_id)
                elif (
                    isinstance(event, LifecycleEvent)
                    and event.status in _TAKEN_ELSEWHERE
                    and event.instance_id != engine.instance_id
                    and event.task_id in engine.tasks
                ):
                    # Accepted here, then cancelled, or claimed and started, by another
                    # instance: nothing of it is left to run here.
                    engine.forget(event.task_id)
        return
    # No fan-out: poll the records of the attempts running here, and of the tasks
    # accepted here that wait on a queue (a slice per round): another instance may have
    # run or cancelled one, and only its record says so (they would hold their place in
    # a bounded queue, and their invocations, for good).
    interval = max(engine.poll_interval, 0.5)
    offset = 0
    while True:
        await asyncio.sleep(interval)
        for task_id in list(scopes.scopes):
            found, record = await _read(engine, task_id)
            if found and record is not None and record.cancel_requested:
                scopes.request(task_id)
        waiting = engine.tasks.waiting_ids()
        if not waiting:
            continue
        offset %= len(waiting)
        chunk = waiting[offset : offset + WAITING_POLL_SLICE]
        offset += len(chunk)
        for task_id in chunk:
            found, record = await _read(engine, task_id)
            if found and _left_this_instance(engine, task_id, record):
                engine.forget(task_id)


async def _read(engine: Engine, task_id: str) -> tuple[bool, TaskRecord | None]:
    """``(True, record or None)``; ``(False, None)`` when the store did not answer."""
    try:
        return True, await engine.backend.get(task_id)
    except Exception:
        reraise_if_cancelled()
        logger.debug("polling the record of %s failed", task_id, exc_info=True)
        return False, None


def _left_this_instance(engine: Engine, task_id: str, record: TaskRecord | None) -> bool:
    """True when a task accepted here and waiting on a queue is no longer this
    instance's to run: claimed or adopted by another instance, or finished (cancelled)
    while not running here. No record yet: its create is still in the write buffer (a
    PENDING task is never purged)."""
    if record is None:
        return False
    if record.owner != engine.instance_id:
        return True
    return record.status.is_terminal and task_id not in engine.cancel_scopes.scopes
