"""What a flush of the write buffer does after ``create_many`` on a durable backend: its
queued tasks are put on their queues at once (their records name this instance as owner,
so if it dies first, recovery queues them)."""

from __future__ import annotations

import asyncio

from .invocation import QUEUED
from .local_tasks import LocalTasks
from .models import TaskRecord, TaskStatus
from .protocols import Backend

__all__ = ["ENQUEUES_AT_ONCE", "enqueue_batch"]

ENQUEUES_AT_ONCE = 4
"""Enqueues of one flushed batch in flight at once (within a connection pool's size)."""


async def enqueue_batch(tasks: LocalTasks, backend: Backend, batch: list[TaskRecord]) -> None:
    """Put the batch's queued tasks on their queues as soon as they are stored.

    Queued before the response that acknowledges them, so that a queue worker of any
    instance can start them without waiting for this one's ``submit()``.
    """
    queued = [
        r
        for r in batch
        if r.status is TaskStatus.PENDING
        and (invocation := tasks.get(r.task_id)) is not None
        and invocation.route == QUEUED
    ]
    if not queued:
        return
    # A few at a time: a burst of hundreds would open and close pooled connections.
    gate = asyncio.Semaphore(ENQUEUES_AT_ONCE)

    async def enqueue(record: TaskRecord) -> None:
        async with gate:
            await backend.enqueue(record.task_id, queue=record.queue, priority=record.priority)

    results = await asyncio.gather(*(enqueue(r) for r in queued), return_exceptions=True)
    tasks.mark_enqueued(
        r.task_id
        for r, result in zip(queued, results, strict=True)
        if not isinstance(result, BaseException)
    )
    errors = [result for result in results if isinstance(result, BaseException)]
    if errors:
        raise errors[0]  # submit() enqueues the rest, with retries
