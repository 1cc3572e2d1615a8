"""What a flush of the write buffer does after ``create_many`` on a durable backend: its
queued tasks are put on their queues at once (their records name this instance as owner,
so if it dies first, recovery queues them)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .invocation import QUEUED
from .models import TaskRecord, TaskStatus

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["enqueue_batch"]


def _pending(engine: Engine, batch: list[TaskRecord], *, queued: bool) -> list[TaskRecord]:
    return [
        r
        for r in batch
        if r.status is TaskStatus.PENDING
        and (inv := engine.tasks.get(r.task_id)) is not None
        and (inv.route == QUEUED) is queued
    ]


async def enqueue_batch(engine: Engine, batch: list[TaskRecord]) -> None:
    """Put the batch's queued tasks on their queues as soon as they are stored.

    Queued before the response that acknowledges them, so that a queue worker of any
    instance can start them without waiting for this one's ``submit()``.
    """
    queued = _pending(engine, batch, queued=True)
    if not queued:
        return
    backend = engine.backend
    results = await asyncio.gather(
        *(backend.enqueue(r.task_id, queue=r.queue, priority=r.priority) for r in queued),
        return_exceptions=True,
    )
    engine.tasks.mark_enqueued(
        r.task_id
        for r, result in zip(queued, results, strict=True)
        if not isinstance(result, BaseException)
    )
    errors = [result for result in results if isinstance(result, BaseException)]
    if errors:
        raise errors[0]  # submit() enqueues the rest, with retries
