"""Running a task this process did not accept: its invocation from the stored record."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .encoding import decode_arguments, has_unstored
from .errors import BackendUnavailableError
from .invocation import QUEUED, Invocation
from .limits import UNKNOWN_TASK_GRACE
from .models import ACTIVE_STATUSES, Claim, TaskRecord, TaskStatus, TaskUpdate
from .protocols import TaskBackend
from .registry import unrecoverable_reason
from .runtime import reraise_if_cancelled

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["fail_unreadable", "rehydrate"]

logger = logging.getLogger("fastapi_taskflow")


async def rehydrate(engine: Engine, claim: Claim) -> Invocation | None:
    """Rebuild the invocation of a claimed task accepted elsewhere, from its stored record.

    Returns None, letting go of the task, when it cannot run here:

    * its record is no longer PENDING (nothing to do);
    * its record cannot be read (corrupt): it is made FAILED, so it stops counting as
      PENDING;
    * its arguments were not stored, or no longer fit the function's signature: FAILED
      with that reason;
    * no instance can ever find its function by name (a lambda, a closure, a function
      of ``__main__``): FAILED with that reason;
    * this instance lacks its function: back on the queue for an instance that has it
      (a warning is logged once per name), until ``UNKNOWN_TASK_GRACE`` has passed
      since the task last changed; then FAILED, saying no instance registered it.
    """
    backend = engine.backend
    record = await engine.availability.persist(lambda: backend.get(claim.task_id))
    if record is None:
        await fail_unreadable(engine, backend, claim.task_id)
        return None
    if record.status is not TaskStatus.PENDING:
        return None
    entry = engine.registry.by_name(record.func_name)
    why = _cannot_run(engine, record, registered=entry is not None)
    if why is not None:
        await _fail(engine, record.task_id, why)
        return None
    if entry is None:
        if record.func_name not in engine.warned_names:
            engine.warned_names.add(record.func_name)
            logger.warning(
                "task %s needs %r, which is not registered on this instance (%s); it "
                "stays PENDING for an instance that has it (FAILED after %s)",
                record.task_id,
                record.func_name,
                engine.instance_id,
                UNKNOWN_TASK_GRACE,
            )
        await engine.requeue(record, delay=max(engine.poll_interval * 5, 1.0), wake=False)
        return None
    try:
        args, kwargs = decode_arguments(entry.func, record.args or [], record.kwargs or {})
    except Exception as exc:
        await _fail(engine, record.task_id, f"stored arguments do not fit: {exc}")
        return None
    return Invocation(
        entry.func,
        args,
        kwargs,
        entry.config,
        record.task_id,
        engine,
        entry.is_async,
        record.queue,
        record.priority,
        QUEUED,
        attempts=record.attempt,
        func_name=record.func_name,
        tags=record.tags or None,
        requeue_on_interrupt=record.requeue_on_interrupt,
    )


def _cannot_run(engine: Engine, record: TaskRecord, *, registered: bool) -> str | None:
    """Say why no instance will ever run ``record``, or return None."""
    name = record.func_name
    if record.args is None:
        return (
            "its arguments were not stored (it was accepted by an in-process backend, or "
            "its record was changed by hand), so no instance can run it"
        )
    if has_unstored(record.args, record.kwargs):
        return (
            "its arguments (a file, stream or generator) were kept in memory by the "
            "process that accepted it, so it cannot be run again from its record"
        )
    if registered:
        return None
    why = unrecoverable_reason(name)
    if why is not None:
        return (
            f"no instance can find the function {name!r} by its name: {why}. Define it "
            "at module level and register it with @task_manager.task()"
        )
    if engine.clock.now() - record.updated_at > UNKNOWN_TASK_GRACE:
        return (
            f"no instance had the function {name!r} registered for {UNKNOWN_TASK_GRACE} "
            "(register it with @task_manager.task() on the instances that should run it)"
        )
    return None


async def _fail(engine: Engine, task_id: str, error: str) -> None:
    failed = await engine.availability.persist(
        lambda: engine.backend.transition(
            task_id,
            expected={TaskStatus.PENDING},
            new=TaskStatus.FAILED,
            update=TaskUpdate(finished_at=engine.clock.now(), error=error),
        )
    )
    if failed is not None:
        logger.warning("task %s FAILED: %s", task_id, error)
        await engine.emit_lifecycle(failed)


async def fail_unreadable(engine: Engine, backend: TaskBackend, task_id: str) -> None:
    """Make a task whose record cannot be read FAILED, if it exists and is active.

    The store skips a corrupt record when reading it, but its status can still be
    changed: this ends it, so it no longer counts as PENDING or RUNNING forever. For a
    task with no record at all this changes nothing.
    """
    try:
        await backend.transition(
            task_id,
            expected=ACTIVE_STATUSES,
            new=TaskStatus.FAILED,
            update=TaskUpdate(
                finished_at=engine.clock.now(),
                error="the stored record of this task cannot be read (corrupt), so it "
                "cannot run; see the store's log for what was wrong",
            ),
        )
    except BackendUnavailableError:
        raise
    except Exception:
        reraise_if_cancelled()
        logger.warning("could not end unreadable task %s", task_id, exc_info=True)
