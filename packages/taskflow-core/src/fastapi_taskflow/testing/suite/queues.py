"""Named queues: enqueue, claim order, delays, dequeue and length."""

from __future__ import annotations

import random

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.models import Claim
from fastapi_taskflow.protocols import TaskBackend

from ._base import ConformanceBase, make_record, seconds

__all__ = ["QueueTests", "stored_ids"]

Q = "conformance"


async def stored_ids(backend: TaskBackend, clock: ManualClock, count: int) -> list[str]:
    """Create ``count`` PENDING tasks (the engine always creates before it enqueues)."""
    results = await backend.create_many([make_record(clock, queue=Q) for _ in range(count)])
    assert all(r.created for r in results)
    return [r.record.task_id for r in results]


async def drain(backend: TaskBackend, owner: str = "w") -> list[str]:
    """Claim one at a time until the queue gives nothing; return the ids in order."""
    ids: list[str] = []
    while claims := await backend.claim(queue=Q, owner=owner):
        assert len(claims) == 1
        ids.append(claims[0].task_id)
    return ids


class QueueTests(ConformanceBase):
    """``enqueue``, ``claim``, ``dequeue`` and ``queue_length``."""

    async def test_enqueue_then_claim(self, backend: TaskBackend, clock: ManualClock) -> None:
        """A due task is claimed once and leaves the queue.

        If this fails, check that claim() removes the task from the queue and returns a
        Claim with the task id, the queue and the priority.
        """
        [task_id] = await stored_ids(backend, clock, 1)
        await backend.enqueue(task_id, queue=Q, priority=3)
        assert await backend.queue_length(Q) == 1
        claims = await backend.claim(queue=Q, owner="w1")
        assert claims == [Claim(task_id=task_id, queue=Q, priority=3)]
        assert await backend.queue_length(Q) == 0
        assert await backend.claim(queue=Q, owner="w2") == []

    async def test_claim_empty_or_unknown_queue(self, backend: TaskBackend) -> None:
        """Claiming from an empty or never-used queue returns an empty list.

        If this fails, check that claim() returns ``[]`` rather than raising.
        """
        assert await backend.claim(queue="never-used", owner="w", limit=10) == []
        assert await backend.queue_length("never-used") == 0

    async def test_priority_then_fifo(self, backend: TaskBackend, clock: ManualClock) -> None:
        """Higher priority first; equal priorities in enqueue order (not id order).

        All tasks are enqueued at one instant, so only a per-enqueue sequence tells
        them apart. If this fails, check the claim ORDER BY
        ``priority DESC, due ASC, enqueue sequence ASC``.
        """
        ids = sorted(await stored_ids(backend, clock, 7))
        plan = [
            (ids[4], 0),
            (ids[1], 5),
            (ids[6], 0),
            (ids[0], 0),
            (ids[3], 5),
            (ids[2], -2),
            (ids[5], 1),
        ]
        for task_id, priority in plan:
            await backend.enqueue(task_id, queue=Q, priority=priority)
        claims = await backend.claim(queue=Q, owner="w", limit=10)
        assert [c.task_id for c in claims] == [
            ids[1],
            ids[3],
            ids[5],
            ids[4],
            ids[6],
            ids[0],
            ids[2],
        ]
        assert [c.priority for c in claims] == [5, 5, 1, 0, 0, 0, -2]

    async def test_earliest_due_first_among_equal_priority(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Among equal priorities the earliest due time wins over enqueue order.

        Due time is ``not_before``, or the enqueue time when there is none. If this
        fails, check that the queue orders by due time before enqueue sequence.
        """
        first, second, third = await stored_ids(backend, clock, 3)
        start = clock.now()
        await backend.enqueue(first, queue=Q)  # due at start
        clock.advance(5)
        await backend.enqueue(second, queue=Q, not_before=start - seconds(10))
        await backend.enqueue(third, queue=Q, not_before=start + seconds(2))
        assert await drain(backend) == [second, first, third]

    async def test_not_before_is_respected(self, backend: TaskBackend, clock: ManualClock) -> None:
        """A delayed task is not claimable before ``not_before`` and is at it.

        Due means ``not_before <= now`` (of the backend's clock). If this fails, check
        that claim() compares against ``self.clock.now()``, not the server's time.
        """
        [task_id] = await stored_ids(backend, clock, 1)
        await backend.enqueue(task_id, queue=Q, priority=9, not_before=clock.now() + seconds(60))
        assert await backend.claim(queue=Q, owner="w") == []
        assert await backend.queue_length(Q) == 1, "a delayed task still counts"
        clock.advance(59)
        assert await backend.claim(queue=Q, owner="w") == []
        clock.advance(1)
        claims = await backend.claim(queue=Q, owner="w")
        assert [c.task_id for c in claims] == [task_id]

    async def test_delayed_task_does_not_block_due_ones(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """A delayed high-priority task never hides due lower-priority tasks.

        If this fails, check that claim() filters on due *before* taking the best.
        """
        delayed, due = await stored_ids(backend, clock, 2)
        await backend.enqueue(delayed, queue=Q, priority=100, not_before=clock.now() + seconds(30))
        await backend.enqueue(due, queue=Q, priority=0)
        claims = await backend.claim(queue=Q, owner="w", limit=5)
        assert [c.task_id for c in claims] == [due]
        assert await backend.queue_length(Q) == 1

    async def test_claim_limit(self, backend: TaskBackend, clock: ManualClock) -> None:
        """``limit`` caps one claim; the rest stay queued for the next one.

        If this fails, check the LIMIT of claim().
        """
        ids = await stored_ids(backend, clock, 5)
        for task_id in ids:
            await backend.enqueue(task_id, queue=Q)
        first = await backend.claim(queue=Q, owner="w", limit=2)
        second = await backend.claim(queue=Q, owner="w", limit=10)
        assert [c.task_id for c in first] == ids[:2]
        assert [c.task_id for c in second] == ids[2:]

    async def test_queues_are_separate(self, backend: TaskBackend, clock: ManualClock) -> None:
        """A task enqueued on one queue is never claimed from another.

        If this fails, check that claim() and queue_length() filter by queue name.
        """
        a, b = await stored_ids(backend, clock, 2)
        await backend.enqueue(a, queue="q-a")
        await backend.enqueue(b, queue="q-b")
        assert await backend.queue_length("q-a") == 1
        claims = await backend.claim(queue="q-b", owner="w", limit=10)
        assert [c.task_id for c in claims] == [b]
        assert await backend.queue_length("q-a") == 1

    async def test_reenqueue_replaces_priority_and_delay(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Enqueuing a queued task again replaces its priority and ``not_before``.

        The task is on the queue once. If this fails, check that enqueue() is an
        upsert keyed by ``(queue, task_id)``.
        """
        task_id, other = await stored_ids(backend, clock, 2)
        await backend.enqueue(task_id, queue=Q, priority=0, not_before=clock.now() + seconds(100))
        await backend.enqueue(other, queue=Q, priority=1)
        await backend.enqueue(task_id, queue=Q, priority=5)
        assert await backend.queue_length(Q) == 2
        claims = await backend.claim(queue=Q, owner="w", limit=10)
        assert [(c.task_id, c.priority) for c in claims] == [(task_id, 5), (other, 1)]
        await backend.enqueue(task_id, queue=Q)
        await backend.enqueue(task_id, queue=Q, not_before=clock.now() + seconds(60))
        assert await backend.claim(queue=Q, owner="w") == []
        assert await backend.queue_length(Q) == 1

    async def test_claimed_task_can_be_enqueued_again(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """A claimed task enqueued again (a retry) is claimable again after its delay.

        If this fails, check that claim() fully removes the entry so enqueue() adds a
        fresh one.
        """
        [task_id] = await stored_ids(backend, clock, 1)
        await backend.enqueue(task_id, queue=Q)
        assert len(await backend.claim(queue=Q, owner="w")) == 1
        await backend.enqueue(task_id, queue=Q, not_before=clock.now() + seconds(10))
        assert await backend.claim(queue=Q, owner="w") == []
        clock.advance(10)
        assert [c.task_id for c in await backend.claim(queue=Q, owner="w")] == [task_id]

    async def test_dequeue(self, backend: TaskBackend, clock: ManualClock) -> None:
        """``dequeue`` removes a waiting task and says whether it was there.

        If this fails, check that dequeue() deletes by ``(queue, task_id)`` and
        returns whether a row was deleted.
        """
        a, b = await stored_ids(backend, clock, 2)
        await backend.enqueue(a, queue=Q, not_before=clock.now() + seconds(5))
        await backend.enqueue(b, queue=Q)
        assert await backend.dequeue(a, queue="other-queue") is False
        assert await backend.dequeue(a, queue=Q) is True
        assert await backend.dequeue(a, queue=Q) is False
        assert await backend.queue_length(Q) == 1
        clock.advance(10)
        assert await drain(backend) == [b]
        assert await backend.dequeue(b, queue=Q) is False, "a claimed task is not waiting"

    async def test_claim_order_matches_the_rules(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Forty tasks with random priorities and delays come out in the documented order.

        Order: priority descending, then due time, then enqueue order. If this fails,
        compare your claim ordering with that rule on the printed ids.
        """
        rng = random.Random(20300101)
        ids = await stored_ids(backend, clock, 40)
        start = clock.now()
        expected: list[tuple[int, float, int, str]] = []
        for seq, task_id in enumerate(ids):
            priority = rng.choice([0, 0, 1, 2, 5])
            delay = rng.choice([None, -30, 0, 5, 20, 40])
            now = clock.now()
            not_before = None if delay is None else start + seconds(delay)
            due = not_before or now
            await backend.enqueue(task_id, queue=Q, priority=priority, not_before=not_before)
            expected.append((-priority, (due - start).total_seconds(), seq, task_id))
            clock.advance(rng.choice([0, 0, 1]))
        clock.advance(3600)
        assert await drain(backend) == [item[3] for item in sorted(expected)]
