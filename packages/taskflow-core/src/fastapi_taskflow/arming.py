"""Putting a schedule's task in the store and on its queue, safely across instances.

Used by periodic schedules (every instance arms each tick; one record results) and by
one-off schedules. The order makes a crash at any point harmless:

1. lease the task id to this instance (refused while another instance arms the same
   id: that instance is doing the work);
2. create the record (atomic insert-if-absent on the id and the idempotency key);
3. enqueue it, runnable at ``run_at`` (one entry per task, however often enqueued);
4. release the lease: a queued task needs none.

If the instance dies after 2 and before 4, its lease expires and recovery puts the
PENDING task on its queue (at once, not at ``run_at``: the only case where a one-off
firing can run early, and only after a crash in that window).
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


async def arm(engine: Engine, record: TaskRecord, run_at: datetime | None) -> CreateResult | None:
    """Create ``record`` and queue it for ``run_at`` (None: now).

    Returns the create result, or None when another instance holds the task's lease
    (it is arming the same task right now). Raises the backend's error when the store is
    unreachable (nothing was armed then, or recovery finishes the job).
    """
    backend, me = engine.backend, engine.instance_id
    task_id = record.task_id
    if not await engine.availability.call(
        lambda: backend.acquire_lease(task_id, owner=me, lease_seconds=engine.lease_seconds)
    ):
        return None
    result = await engine.availability.call(lambda: backend.create(record))
    if result.created:
        await engine.availability.call(
            lambda: backend.enqueue(
                task_id, queue=record.queue, priority=record.priority, not_before=run_at
            )
        )
    try:
        await backend.release_lease(task_id, owner=me)
    except Exception:
        logger.debug("releasing the arming lease of %s failed; it expires", task_id)
    if result.created:
        await engine.emit_lifecycle(result.record)
        worker = engine.worker(record.queue)
        delay = (run_at - engine.clock.now()).total_seconds() if run_at is not None else 0.0
        if delay > 0:
            worker.wake_later(delay)
        else:
            worker.wake()
    return result
