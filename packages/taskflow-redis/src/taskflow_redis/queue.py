"""Queues with priority and ``not_before``, and one-off schedules by run key.

A named queue is three keys: ``queue:<name>:ready`` (a sorted set of due tasks, score
``-priority`` and member ``<due µs><sequence>|<id>``, so Redis orders it by priority,
then due time, then enqueue order), ``queue:<name>:delayed`` (not-yet-due ids scored by
due time) and ``queue:<name>:items`` (id -> entry, for replace, dequeue and length).
``claim`` first promotes delayed tasks that have become due, by the injected clock, and
logs what it hands over under its call's token, so that a claim whose reply was lost is
recovered by the next claim of the same queue and claimer (see :mod:`.claims`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from fastapi_taskflow.models import Claim

from .base import RedisBase, logger
from .claims import CLAIM_LOG_TTL, ClaimTokens
from .coalesce import Coalescer
from .codec import as_str, dumps_compact
from .connection import driver_errors
from .keys import micros, padded

__all__ = ["RedisQueues"]

PROMOTE_CAP = 10_000
"""Delayed tasks one claim moves to the ready set at most (the earliest due first)."""


EnqueueItem = tuple[str, str, str, str, str]
"""One ``enqueue.lua`` item: queue, id, priority, due and now (17-digit microseconds)."""


class RedisQueues(RedisBase):
    """The queue and schedule part of the Backend protocol."""

    _enqueues: Coalescer[EnqueueItem]
    _claims: ClaimTokens

    async def enqueue(
        self,
        task_id: str,
        *,
        queue: str,
        priority: int = 0,
        not_before: datetime | None = None,
    ) -> None:
        """See :meth:`fastapi_taskflow.protocols.Backend.enqueue`.

        Calls made in the same event-loop tick (``asyncio.gather`` over many tasks) are
        sent together in one script call, in call order; each behaves as its own call.
        """
        now = self.clock.now()
        due = padded(micros(not_before or now))
        item = (queue, task_id, str(int(priority)), due, padded(micros(now)))
        await self._enqueues.submit(item)

    async def _enqueue_batch(self, items: Sequence[EnqueueItem]) -> None:
        args = [value for item in items for value in item]
        first_queue, first_id = items[0][0], items[0][1]
        what = f"enqueuing {first_id} on {first_queue!r}" if len(items) == 1 else "enqueuing tasks"
        await self._run("enqueue", args, what)

    async def claim(self, *, queue: str, owner: str, limit: int = 1) -> list[Claim]:
        """See :meth:`fastapi_taskflow.protocols.Backend.claim`.

        One script call promotes due delayed tasks, pops the best ``limit`` and makes
        ``owner`` the owner of their active records, so no task is handed to two claimers
        and a claimed task is never without an owner.

        When an earlier call of this backend for the same queue and owner failed after
        its script may have run (the reply was lost), this call first hands over what
        that call took and is still PENDING, owned by ``owner`` and not queued again;
        those count toward ``limit`` (see :mod:`taskflow_redis.claims`).
        """
        if limit <= 0:
            return []
        tokens = self._claims
        call = tokens.start(queue, owner)
        args: list[str | int] = [
            queue,
            owner,
            dumps_compact(owner),
            padded(self._now_us()),
            limit,
            PROMOTE_CAP,
            call.token,
            call.received,
            CLAIM_LOG_TTL,
            *call.unconfirmed,
        ]
        try:
            reply = await self._run("claim", args, f"claiming from {queue!r}")
            claims = [
                Claim(task_id=as_str(reply[i]), queue=queue, priority=int(as_str(reply[i + 1])))
                for i in range(1, len(reply) - 1, 2)
            ]
        except BaseException:
            tokens.failed(queue, owner, call)
            raise
        tokens.succeeded(queue, owner, call, took=bool(claims))
        recovered = int(reply[0])
        if recovered:
            logger.info(
                "claiming from queue %r: handed over %d task(s) taken by an earlier claim "
                "whose reply was lost",
                queue,
                recovered,
            )
        return claims

    async def dequeue(self, task_id: str, *, queue: str) -> bool:
        """See :meth:`fastapi_taskflow.protocols.Backend.dequeue`."""
        reply = await self._run("dequeue", [queue, task_id], f"dequeuing {task_id}")
        return bool(int(reply))

    async def queue_length(self, queue: str) -> int:
        """See :meth:`fastapi_taskflow.protocols.Backend.queue_length`; one ``HLEN``."""
        client = self._redis()
        with driver_errors(f"measuring queue {queue!r}", self._where()):
            return int(await client.hlen(self._keys.queue_items(queue)))

    async def schedule_once(
        self,
        run_key: str,
        *,
        task_id: str,
        queue: str,
        run_at: datetime,
        priority: int = 0,
    ) -> bool:
        """See :meth:`fastapi_taskflow.protocols.Backend.schedule_once`.

        Used run keys are remembered for ``retention`` (forever when it is None).
        """
        now = padded(self._now_us())
        args = [run_key, queue, task_id, str(int(priority)), padded(micros(run_at)), now]
        reply = await self._run("schedule_once", args, f"scheduling run {run_key!r}")
        return bool(int(reply))
