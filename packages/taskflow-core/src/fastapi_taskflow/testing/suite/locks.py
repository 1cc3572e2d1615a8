"""Named locks (periodic schedules) and one-off schedules keyed by run key."""

from __future__ import annotations

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.protocols import TaskBackend

from ._base import ConformanceBase, new_id, seconds
from .queues import Q, stored_ids

__all__ = ["LockTests", "ScheduleTests"]


class LockTests(ConformanceBase):
    """``acquire_lock`` and ``release_lock``."""

    async def test_lock_is_exclusive_and_reentrant(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """A lock has one owner; the owner may take it again, which extends it.

        If this fails, check that acquire_lock() refuses other owners while
        ``expires_at > now`` and re-grants (extending) its own owner.
        """
        assert await backend.acquire_lock("tick", owner="a", ttl_seconds=30) is True
        assert await backend.acquire_lock("tick", owner="b", ttl_seconds=30) is False
        clock.advance(20)
        assert await backend.acquire_lock("tick", owner="a", ttl_seconds=30) is True
        clock.advance(20)  # past the first ttl, inside the extended one
        assert await backend.acquire_lock("tick", owner="b", ttl_seconds=30) is False
        assert await backend.acquire_lock("other", owner="b", ttl_seconds=30) is True

    async def test_lock_expires(self, backend: TaskBackend, clock: ManualClock) -> None:
        """After its ttl a lock may be taken by another owner; the old owner lost it.

        If this fails, check that lock expiry uses the injected clock, not a server TTL.
        """
        assert await backend.acquire_lock("tick", owner="a", ttl_seconds=10)
        clock.advance(11)
        assert await backend.acquire_lock("tick", owner="b", ttl_seconds=10) is True
        assert await backend.acquire_lock("tick", owner="a", ttl_seconds=10) is False
        assert await backend.release_lock("tick", owner="a") is False

    async def test_release_lock(self, backend: TaskBackend, clock: ManualClock) -> None:
        """Only the owner releases a lock; then anyone may take it.

        If this fails, check that release_lock() deletes only the owner's lock and
        returns whether it did.
        """
        assert await backend.release_lock("tick", owner="a") is False
        await backend.acquire_lock("tick", owner="a", ttl_seconds=30)
        assert await backend.release_lock("tick", owner="b") is False
        assert await backend.acquire_lock("tick", owner="b", ttl_seconds=30) is False
        assert await backend.release_lock("tick", owner="a") is True
        assert await backend.release_lock("tick", owner="a") is False
        assert await backend.acquire_lock("tick", owner="b", ttl_seconds=30) is True


class ScheduleTests(ConformanceBase):
    """``schedule_once``: exactly one enqueue per run key."""

    async def test_schedule_once_enqueues_at_run_at(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """The first call with a run key enqueues the task, due at ``run_at``.

        If this fails, check that schedule_once() enqueues with ``not_before=run_at``
        and the given priority.
        """
        [task_id] = await stored_ids(backend, clock, 1)
        run_at = clock.now() + seconds(60)
        key = new_id("run-")
        assert await backend.schedule_once(key, task_id=task_id, queue=Q, run_at=run_at, priority=4)
        assert await backend.queue_length(Q) == 1
        assert await backend.claim(queue=Q, owner="w") == []
        clock.advance(60)
        claims = await backend.claim(queue=Q, owner="w")
        assert [(c.task_id, c.priority) for c in claims] == [(task_id, 4)]

    async def test_schedule_once_per_run_key(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """A run key used once is refused forever after, and nothing changes.

        Even after the first task ran, a second call with the same key returns False
        and enqueues nothing; another key is independent. If this fails, check that
        run keys are recorded permanently and atomically with the enqueue.
        """
        first, second, third = await stored_ids(backend, clock, 3)
        key = new_id("run-")
        assert await backend.schedule_once(key, task_id=first, queue=Q, run_at=clock.now())
        assert (
            await backend.schedule_once(key, task_id=second, queue=Q, run_at=clock.now()) is False
        )
        assert await backend.queue_length(Q) == 1
        assert [c.task_id for c in await backend.claim(queue=Q, owner="w")] == [first]
        clock.advance(3600)
        assert (
            await backend.schedule_once(key, task_id=second, queue=Q, run_at=clock.now()) is False
        )
        assert await backend.schedule_once(key, task_id=first, queue=Q, run_at=clock.now()) is False
        assert await backend.queue_length(Q) == 0
        other_key = new_id("run-")
        assert await backend.schedule_once(
            other_key, task_id=third, queue=Q, run_at=clock.now() - seconds(5)
        )
        assert [c.task_id for c in await backend.claim(queue=Q, owner="w")] == [third]
