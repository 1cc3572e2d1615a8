"""What a flush of the write buffer does around ``create_many`` on a durable backend.

Before: the batch's background and eager tasks are leased to this instance, so no record
is ever in the store without an owner. After: its queued tasks are put on their queues,
so an instance that dies right after acknowledging them loses nothing.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .invocation import QUEUED
from .models import TaskRecord, TaskStatus

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["enqueue_batch", "lease_batch"]


def _pending(engine: Engine, batch: list[TaskRecord], *, queued: bool) -> list[TaskRecord]:
    return [
        r
        for r in batch
        if r.status is TaskStatus.PENDING
        and (inv := engine.invocations.get(r.task_id)) is not None
        and (inv.route == QUEUED) is queued
    ]


async def lease_batch(engine: Engine, batch: list[TaskRecord]) -> None:
    """Lease the batch's tasks that do not go through a queue to this instance."""
    await engine.leases.take(r.task_id for r in _pending(engine, batch, queued=False))


async def enqueue_batch(engine: Engine, batch: list[TaskRecord]) -> None:
    """Put the batch's queued tasks on their queues as soon as they are stored.

    On a durable backend a queued task carries no lease, so it must be on its queue
    before the response that acknowledges it: an instance that dies after the response
    and before ``submit()`` would otherwise leave it PENDING forever.
    """
    queued = _pending(engine, batch, queued=True)
    if not queued:
        return
    backend = engine.backend
    results = await asyncio.gather(
        *(backend.enqueue(r.task_id, queue=r.queue, priority=r.priority) for r in queued),
        return_exceptions=True,
    )
    engine.enqueued.update(
        r.task_id
        for r, result in zip(queued, results, strict=True)
        if not isinstance(result, BaseException)
    )
    errors = [result for result in results if isinstance(result, BaseException)]
    if errors:
        raise errors[0]  # submit() enqueues the rest, with retries
