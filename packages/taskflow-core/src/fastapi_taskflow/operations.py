"""Operator actions on stored tasks: retry, retry every failed one, cancel, purge.

They work on an opened :class:`~fastapi_taskflow.protocols.TaskBackend` alone, with no
registered function, so the admin API (inside the app) and the ``taskflow`` command line
(a separate process that only has the backend URL) share them.

A retried task goes back on its queue the way recovery puts back an adopted PENDING task:
an instance that has the function claims it (the PENDING -> RUNNING compare-and-set
admits exactly one) and runs it with its stored arguments. While it is handed over the
task's owner is the operator, who has no heartbeat: if the enqueue is lost, the instances
take that owner for dead after ``liveness_seconds`` and queue the task again; a claim
makes the claimer its owner.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from .clock import Clock
from .errors import (
    IdempotencyKeyHeldError,
    InvalidOperationError,
    RetryQueueFullError,
    TaskflowError,
    TaskNotFoundError,
    TaskStateError,
)
from .events import LogEvent, lifecycle_event
from .models import (
    KEY_RELEASING_STATUSES,
    LogEntry,
    TaskQuery,
    TaskRecord,
    TaskStatus,
    TaskUpdate,
)
from .protocols import TaskBackend

__all__ = [
    "CANCEL_MARK",
    "RETRYABLE_STATUSES",
    "cancel_if_pending",
    "cancel_pending",
    "cancel_request_event",
    "cancel_task",
    "cancel_task_with",
    "get_task",
    "purge_finished",
    "retry_failed",
    "retry_task",
]

RETRYABLE_STATUSES = frozenset({TaskStatus.FAILED, TaskStatus.INTERRUPTED, TaskStatus.CANCELLED})
"""Statuses a task can be retried from."""

_PENDING = frozenset({TaskStatus.PENDING})

CANCEL_MARK = "taskflow_cancel"
"""The ``LogEvent.extra`` field that marks a cancellation request (the engine's
cancellation watcher listens for it)."""


def default_actor() -> str:
    """The name operations sign their log lines and events with: ``operator@<host>``."""
    return f"operator@{socket.gethostname()}"


async def get_task(backend: TaskBackend, task_id: str) -> TaskRecord:
    """The stored task ``task_id`` (with its logs).

    Raises:
        TaskNotFoundError: no task has this id.
    """
    record = await backend.get(task_id)
    if record is None:
        raise TaskNotFoundError(task_id)
    return record


async def _announce(backend: TaskBackend, record: TaskRecord, actor: str) -> None:
    """Publish the new status so every dashboard and ``taskflow watch`` sees it."""
    event = lifecycle_event(record, actor)
    # Best effort, like every event: the store holds the truth.
    with contextlib.suppress(TaskflowError):
        await backend.publish(event)


async def retry_task(
    backend: TaskBackend,
    task_id: str,
    *,
    clock: Clock,
    max_queued: int | None = None,
    actor: str | None = None,
) -> TaskRecord:
    """Run a FAILED, INTERRUPTED or CANCELLED task again, as the same task.

    The task becomes PENDING (compare-and-set, so two operators retrying at once retry it
    once), its error is cleared and its attempt count restarts (it gets its full retries
    again); arguments, tags, queue and priority are kept. It is then put on its queue,
    where an instance that has its function runs it.

    A FAILED task with an idempotency key takes its key back in the same atomic change
    (``Store.transition(..., take_key=True)``): while it is pending or running, a new
    task added with that key gets the retried task instead of a second run. If a new
    task took the key after the failure, the retry is refused and names that task.

    Args:
        backend: an opened backend.
        task_id: the task to retry.
        clock: where the time of the log line comes from.
        max_queued: refuse (``RetryQueueFullError``) when the task's queue already holds
            this many waiting tasks; None: no limit.
        actor: who retries, for the task's log and the published event
            (default ``operator@<host>``).

    Returns:
        The task as stored after the change (PENDING, without logs).

    Raises:
        TaskNotFoundError: no task has this id.
        TaskStateError: the task is not in a retryable status, its arguments were never
            stored (an in-process task with arguments that are not JSON), or another
            task now holds its idempotency key.
        RetryQueueFullError: ``max_queued`` was reached; the task keeps its status.
    """
    actor = actor or default_actor()
    record = await get_task(backend, task_id)
    if record.status not in RETRYABLE_STATUSES:
        raise TaskStateError(
            task_id,
            record.status.value,
            f"task {task_id} is {record.status.value.upper()}; only FAILED, INTERRUPTED or "
            "CANCELLED tasks can be retried"
            + (" (it has not finished yet)" if record.status in _ACTIVE else ""),
        )
    if record.args is None:
        raise TaskStateError(
            task_id,
            record.status.value,
            f"task {task_id} cannot be retried: its arguments were not stored (they are not "
            "JSON-encodable, which only an in-process backend allows); add it again instead",
        )
    if max_queued is not None:
        waiting = await backend.queue_length(record.queue)
        if waiting >= max_queued:
            raise RetryQueueFullError(record.queue, max_queued, task_id, [])
    previous = record.status
    # Owned by the operator while handed over: if the enqueue below is lost, recovery
    # adopts the PENDING task and queues it again. A claim makes the claimer its owner.
    reset = TaskUpdate(
        attempt=0,
        error=None,
        started_at=None,
        finished_at=None,
        result=None,
        progress=None,
        cancel_requested=False,
        owner=actor,
    )
    if record.idempotency_key is not None and previous in KEY_RELEASING_STATUSES:
        # A FAILED task released its idempotency key: it takes it back in the same
        # atomic change (refused when a new task took the key meanwhile), so a new
        # add_task() with the key finds the retried task instead of running the work a
        # second time. INTERRUPTED and CANCELLED tasks never released theirs.
        try:
            moved = await backend.transition(
                task_id, expected={previous}, new=TaskStatus.PENDING, update=reset, take_key=True
            )
        except IdempotencyKeyHeldError as exc:
            raise await _key_held(backend, exc) from exc
    else:
        moved = await backend.transition(
            task_id, expected={previous}, new=TaskStatus.PENDING, update=reset
        )
    if moved is None:
        current = await get_task(backend, task_id)
        raise TaskStateError(
            task_id,
            current.status.value,
            f"task {task_id} changed to {current.status.value.upper()} while being retried "
            "(retried or purged by someone else?); nothing was changed",
        )
    await backend.append_logs(
        task_id,
        [
            LogEntry(
                timestamp=clock.now(),
                level="info",
                message=f"retried by {actor} (was {previous.value.upper()})",
                attempt=0,
                extra={"previous_status": previous.value, "previous_error": record.error},
            )
        ],
    )
    await backend.enqueue(task_id, queue=moved.queue, priority=moved.priority)
    await _announce(backend, moved, actor)
    return moved


_ACTIVE = frozenset({TaskStatus.PENDING, TaskStatus.RUNNING})


async def _key_held(backend: TaskBackend, exc: IdempotencyKeyHeldError) -> TaskStateError:
    """The retry's refusal when another task holds the key: names that task (and its
    status, when it can still be read)."""
    holder = None
    with contextlib.suppress(TaskflowError):
        holder = await backend.get(exc.key_holder)
    status = f" ({holder.status.value.upper()})" if holder is not None else ""
    return TaskStateError(
        exc.task_id,
        exc.status,
        f"task {exc.task_id} cannot be retried: its idempotency key is now held by task "
        f"{exc.key_holder}{status}, which was added with the same key after it failed; "
        f"nothing was changed. Follow task {exc.key_holder} instead, or retry task "
        f"{exc.task_id} once that task has failed",
    )


async def retry_failed(
    backend: TaskBackend,
    query: TaskQuery,
    *,
    clock: Clock,
    limit: int | None = None,
    max_queued: int | None = None,
    actor: str | None = None,
) -> list[str]:
    """Retry every task matching ``query`` that is FAILED (see :func:`retry_task`).

    ``query.statuses`` may name other retryable statuses (INTERRUPTED, CANCELLED) to
    retry those instead; by default only FAILED tasks are. Pages are walked newest
    first from ``query.cursor``; tasks that change status meanwhile are skipped.

    Args:
        backend: an opened backend.
        query: the filter (statuses, function, queue, tags, time range, ...).
        clock: where the time of the log lines comes from.
        limit: retry at most this many tasks; None: all that match.
        max_queued: stop when a task's queue holds this many waiting tasks.
        actor: who retries (default ``operator@<host>``).

    Returns:
        The ids retried, in the order they were retried.

    Raises:
        TaskStateError: ``query.statuses`` names a status that cannot be retried.
        RetryQueueFullError: ``max_queued`` was reached; its ``retried`` attribute lists
            the ids retried before it (the rest keep their status).
    """
    if limit is not None and limit < 0:
        raise InvalidOperationError(f"limit must be >= 0 or None, got {limit!r}")
    statuses = list(query.statuses or [TaskStatus.FAILED])
    wrong = [s for s in statuses if s not in RETRYABLE_STATUSES]
    if wrong:
        names = ", ".join(s.value.upper() for s in wrong)
        raise TaskStateError(
            "*",
            wrong[0].value,
            f"tasks that are {names} cannot be retried; filter on FAILED, INTERRUPTED or CANCELLED",
        )
    page_query = query.model_copy(update={"statuses": statuses})
    retried: list[str] = []
    while limit is None or len(retried) < limit:
        page = await backend.query(page_query)
        for record in page.items:
            if limit is not None and len(retried) >= limit:
                break
            try:
                await retry_task(
                    backend, record.task_id, clock=clock, max_queued=max_queued, actor=actor
                )
            except (TaskNotFoundError, TaskStateError):
                continue  # purged, retried by someone else, or its key was taken
            except RetryQueueFullError as exc:
                raise RetryQueueFullError(exc.queue, exc.max_size, exc.task_id, retried) from None
            retried.append(record.task_id)
        if page.next_cursor is None:
            break
        page_query = page_query.model_copy(update={"cursor": page.next_cursor})
    return retried


async def cancel_if_pending(
    backend: TaskBackend, task_id: str, *, finished_at: datetime, error: str
) -> TaskRecord | None:
    """Move a PENDING task to CANCELLED (compare-and-set) and take it off its queue.

    If an instance starts the task at the same moment, exactly one of the two wins; a
    cancelled task never runs.

    Args:
        backend: an opened backend.
        task_id: the task to cancel.
        finished_at: recorded as the task's ``finished_at``.
        error: recorded as the task's error (why it was cancelled).

    Returns:
        The task as stored after the change, or None if it was not PENDING (or is gone).
    """
    cancelled = await backend.transition(
        task_id,
        expected=_PENDING,
        new=TaskStatus.CANCELLED,
        update=TaskUpdate(finished_at=finished_at, error=error, cancel_requested=True, owner=None),
    )
    if cancelled is not None:
        await backend.dequeue(task_id, queue=cancelled.queue)
    return cancelled


def cancel_request_event(
    record: TaskRecord, *, timestamp: datetime, sender: str, by: str | None = None
) -> LogEvent:
    """The event that asks the instance running ``record`` to cancel it (sent through the
    backend's fan-out; dashboards show it as a warning log line). ``sender`` is the
    event's ``instance_id``; ``by`` names who asked in the message (default: sender)."""
    return LogEvent(
        task_id=record.task_id,
        func_name=record.func_name,
        attempt=record.attempt,
        tags=record.tags,
        timestamp=timestamp,
        instance_id=sender,
        level="warning",
        message=f"cancellation requested (from {by or sender})",
        extra={CANCEL_MARK: True},
    )


async def log_cancel_request(backend: TaskBackend, event: LogEvent) -> None:
    """Store the warning line of a cancellation request (``event``, made by
    :func:`cancel_request_event`) in its task's logs, as the docs promise: the task's
    logs say who asked, whatever the fan-out delivers. A failure is left to the
    caller: the flag on the record is what stops the task."""
    entry = LogEntry(
        timestamp=event.timestamp,
        level=event.level,
        message=event.message,
        attempt=event.attempt,
    )
    await backend.append_logs(event.task_id, [entry])


async def cancel_task_with(
    backend: TaskBackend,
    task_id: str,
    *,
    pending: Callable[[TaskRecord], Awaitable[TaskRecord | None]],
    running: Callable[[TaskRecord], Awaitable[None]],
) -> TaskRecord:
    """Cancel a PENDING or RUNNING task; the steps both ``task_manager.cancel()`` and
    :func:`cancel_task` take, with what each does for the two cases.

    Args:
        backend: an opened backend.
        task_id: the task to cancel.
        pending: cancels a PENDING task (see :func:`cancel_if_pending`); returns the
            CANCELLED record, or None if the task was no longer PENDING.
        running: told about a RUNNING task once ``cancel_requested`` is set on its record,
            to make the instance running it stop it.

    Returns:
        The task as stored: CANCELLED, or RUNNING with ``cancel_requested`` set.
        A task already CANCELLED is returned as it is.

    Raises:
        TaskNotFoundError: no task has this id.
        TaskStateError: the task already ended otherwise, or kept changing status.
    """
    for _ in range(20):
        record = await get_task(backend, task_id)
        if record.status is TaskStatus.CANCELLED:
            return record  # idempotent
        if record.status.is_terminal:
            raise TaskStateError(
                task_id,
                record.status.value,
                f"task {task_id} already ended {record.status.value.upper()}; only PENDING "
                "or RUNNING tasks can be cancelled",
            )
        if record.status is TaskStatus.PENDING:
            done = await pending(record)
            if done is not None:
                return done
            continue  # it started (or ended) meanwhile: look again
        updated = await backend.update(task_id, TaskUpdate(cancel_requested=True))
        if updated is None or updated.status is not TaskStatus.RUNNING:
            continue  # it ended, or is PENDING for a retry: look again
        await running(updated)
        return updated
    raise TaskStateError(
        task_id, "changing", f"task {task_id} kept changing status while cancelling it; try again"
    )


async def _cancel_pending_logged(
    backend: TaskBackend, task_id: str, *, clock: Clock, actor: str
) -> TaskRecord | None:
    """:func:`cancel_if_pending`, then the operator's log line and the announcement."""
    now = clock.now()
    cancelled = await cancel_if_pending(
        backend, task_id, finished_at=now, error=f"cancelled by {actor}"
    )
    if cancelled is None:
        return None
    await backend.append_logs(
        task_id,
        [
            LogEntry(
                timestamp=now,
                level="warning",
                message=f"cancelled by {actor} before it started",
                attempt=cancelled.attempt,
            )
        ],
    )
    await _announce(backend, cancelled, actor)
    return cancelled


async def cancel_pending(
    backend: TaskBackend,
    task_id: str,
    *,
    clock: Clock,
    actor: str | None = None,
) -> TaskRecord:
    """Cancel a task that has not started: PENDING -> CANCELLED, and off its queue.

    Compare-and-set: if an instance starts the task at the same moment, exactly one of
    the two wins; a cancelled task never runs. (A RUNNING task raises
    ``TaskStateError`` here; :func:`cancel_task` cancels it too.)

    Args:
        backend: an opened backend.
        task_id: the task to cancel.
        clock: the time recorded as ``finished_at``.
        actor: who cancels (default ``operator@<host>``).

    Returns:
        The task as stored after the change (CANCELLED, without logs).

    Raises:
        TaskNotFoundError: no task has this id.
        TaskStateError: the task is RUNNING or already finished.
    """
    actor = actor or default_actor()
    cancelled = await _cancel_pending_logged(backend, task_id, clock=clock, actor=actor)
    if cancelled is None:
        current = await get_task(backend, task_id)
        raise TaskStateError(
            task_id,
            current.status.value,
            f"task {task_id} is {current.status.value.upper()}; only PENDING tasks can be "
            "cancelled"
            + (
                " (it has already started)"
                if current.status is TaskStatus.RUNNING
                else " (it has already finished)"
            ),
        )
    return cancelled


async def cancel_task(
    backend: TaskBackend,
    task_id: str,
    *,
    clock: Clock,
    actor: str | None = None,
) -> TaskRecord:
    """Cancel a PENDING or RUNNING task from outside the app (the ``taskflow`` CLI).

    A PENDING task is cancelled as by :func:`cancel_pending`. A RUNNING task gets
    ``cancel_requested`` set on its record and a cancellation request is published
    through the backend's fan-out; the app instance running it stops it (an async task
    at its next ``await``, a sync one when it checks ``cancel_requested``) and records
    it CANCELLED. Without fan-out, instances see the flag when they poll the records of
    the tasks they run.

    Args:
        backend: an opened backend.
        task_id: the task to cancel.
        clock: the time recorded as ``finished_at`` (and of the request).
        actor: who cancels (default ``operator@<host>``).

    Returns:
        The task as stored: CANCELLED (it was PENDING, or already CANCELLED), or
        RUNNING with ``cancel_requested`` set (it ends CANCELLED soon after).

    Raises:
        TaskNotFoundError: no task has this id.
        TaskStateError: the task already ended (SUCCESS, FAILED, ...).
    """
    who = actor or default_actor()

    async def pending(record: TaskRecord) -> TaskRecord | None:
        return await _cancel_pending_logged(backend, record.task_id, clock=clock, actor=who)

    async def running(record: TaskRecord) -> None:
        event = cancel_request_event(record, timestamp=clock.now(), sender=who)
        with contextlib.suppress(TaskflowError):  # the flag on the record is the truth
            await log_cancel_request(backend, event)
        with contextlib.suppress(TaskflowError):
            await backend.publish(event)

    return await cancel_task_with(backend, task_id, pending=pending, running=running)


async def purge_finished(
    backend: TaskBackend,
    *,
    older_than: timedelta,
    clock: Clock,
    batch_size: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Delete finished tasks (and their logs) that finished more than ``older_than`` ago.

    Deletes in batches of ``batch_size`` until none is left; active tasks are never
    deleted.

    Args:
        backend: an opened backend.
        older_than: how long ago a task must have finished to be deleted (>= 0).
        clock: where "now" comes from.
        batch_size: how many tasks one store call deletes.
        progress: called after each batch with how many tasks it deleted.

    Returns:
        How many tasks were deleted.

    Raises:
        InvalidOperationError: ``older_than`` is negative or ``batch_size`` is below 1.
    """
    if older_than < timedelta(0):
        raise InvalidOperationError(f"older_than must not be negative, got {older_than}")
    if batch_size < 1:
        raise InvalidOperationError(f"batch_size must be >= 1, got {batch_size!r}")
    cutoff = clock.now() - older_than
    total = 0
    while True:
        deleted = await backend.purge(finished_before=cutoff, batch_size=batch_size)
        if deleted <= 0:
            return total
        total += deleted
        if progress is not None:
            progress(deleted)
