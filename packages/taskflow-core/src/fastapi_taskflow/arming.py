"""Putting a schedule's task in the store and on its queue, safely across instances.

Used by periodic schedules (every instance arms each tick; one record results) and by
one-off schedules. The order makes a crash at any point harmless:

1. create the record, owned by this instance (atomic insert-if-absent on the id and the
   idempotency key: of several instances arming the same firing, one creates it);
2. enqueue it, runnable at ``run_at`` (one entry per task, however often enqueued);
3. release it (a firing due later): the queue holds it now, so it waits for ``run_at``
   whatever happens to this instance.

If the instance dies after 1 and before 3, recovery adopts the PENDING task and puts it
on its queue (at once, not at ``run_at``: the only case where a one-off firing can run
early, and only after a crash in that window).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from .models import CreateResult, TaskRecord

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["arm"]

logger = logging.getLogger("fastapi_taskflow")


async def arm(engine: Engine, record: TaskRecord, run_at: datetime | None) -> CreateResult:
    """Create ``record`` and queue it for ``run_at`` (None: now).

    Returns the create result (``created=False`` when the firing exists already). Raises
    the backend's error when the store is unreachable (nothing was armed then, or
    recovery finishes the job).
    """
    with engine.holding(record.task_id):  # PENDING, ours, not yet queued or released
        return await _arm(engine, record, run_at)


async def _arm(engine: Engine, record: TaskRecord, run_at: datetime | None) -> CreateResult:
    backend = engine.backend
    task_id = record.task_id
    result = await engine.availability.call(lambda: backend.create(record))
    if result.created:
        await engine.availability.call(
            lambda: backend.enqueue(
                task_id, queue=record.queue, priority=record.priority, not_before=run_at
            )
        )
        if record.owner is not None and run_at is not None:
            await engine.release(task_id)
        await engine.emit_lifecycle(result.record)
        worker = engine.worker(record.queue)
        delay = (run_at - engine.clock.now()).total_seconds() if run_at is not None else 0.0
        if delay > 0:
            worker.wake_later(delay)
        else:
            worker.wake()
    return result
