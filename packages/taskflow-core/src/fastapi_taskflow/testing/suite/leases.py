"""Leases: who runs a task, until when, and what happens when the owner dies."""

from __future__ import annotations

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.models import Lease
from fastapi_taskflow.protocols import TaskBackend

from ._base import ConformanceBase, seconds
from .queues import stored_ids

__all__ = ["LeaseTests"]


class LeaseTests(ConformanceBase):
    """``acquire_lease``, ``renew_leases``, ``release_lease`` and ``expired_leases``."""

    async def test_live_lease_is_refused_to_others(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """A free task is leased; another owner is refused while the lease is live.

        If this fails, check that acquire_lease() compares ``expires_at`` with the
        backend clock's now and the owner, in one atomic step.
        """
        [task_id] = await stored_ids(backend, clock, 1)
        assert await backend.acquire_lease(task_id, owner="a", lease_seconds=30) is True
        assert await backend.acquire_lease(task_id, owner="b", lease_seconds=30) is False
        clock.advance(29)
        assert await backend.acquire_lease(task_id, owner="b", lease_seconds=30) is False
        assert await backend.expired_leases() == []

    async def test_expired_lease_can_be_taken(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Once a lease expires another owner takes it; the old owner has lost it.

        If this fails, check that expiry comes from the injected clock (not a server
        TTL) and that acquire_lease() overwrites an expired lease.
        """
        [task_id] = await stored_ids(backend, clock, 1)
        assert await backend.acquire_lease(task_id, owner="dead", lease_seconds=30)
        clock.advance(31)
        assert await backend.acquire_lease(task_id, owner="adopter", lease_seconds=30) is True
        assert await backend.expired_leases() == []
        assert await backend.renew_leases([task_id], owner="dead", lease_seconds=30) == set()
        assert await backend.release_lease(task_id, owner="dead") is False
        assert await backend.acquire_lease(task_id, owner="dead", lease_seconds=30) is False

    async def test_owner_reacquire_extends(self, backend: TaskBackend, clock: ManualClock) -> None:
        """The owner acquiring its own live lease again extends it.

        If this fails, check that acquire_lease() grants the current owner and writes
        the new expiry.
        """
        [task_id] = await stored_ids(backend, clock, 1)
        assert await backend.acquire_lease(task_id, owner="a", lease_seconds=30)
        clock.advance(20)
        assert await backend.acquire_lease(task_id, owner="a", lease_seconds=30) is True
        clock.advance(20)  # past the first expiry, before the second
        assert await backend.expired_leases() == []
        assert await backend.acquire_lease(task_id, owner="b", lease_seconds=30) is False

    async def test_renew_returns_only_owned(self, backend: TaskBackend, clock: ManualClock) -> None:
        """``renew_leases`` extends and returns only the ids ``owner`` still holds.

        An expired lease that nobody took is still renewed; ids never leased, or held by
        someone else, are left out. If this fails, check the owner filter of the renewal.
        """
        mine, stale, theirs, unleased = await stored_ids(backend, clock, 4)
        await backend.acquire_lease(mine, owner="a", lease_seconds=60)
        await backend.acquire_lease(stale, owner="a", lease_seconds=10)
        await backend.acquire_lease(theirs, owner="b", lease_seconds=60)
        clock.advance(20)
        renewed = await backend.renew_leases(
            [mine, stale, theirs, unleased], owner="a", lease_seconds=60
        )
        assert renewed == {mine, stale}
        clock.advance(50)  # without the renewal stale expired at +10, mine at +60
        assert [lease.task_id for lease in await backend.expired_leases()] == [theirs]
        assert await backend.acquire_lease(stale, owner="b", lease_seconds=5) is False
        assert await backend.renew_leases([], owner="a", lease_seconds=60) == set()

    async def test_release_lease(self, backend: TaskBackend, clock: ManualClock) -> None:
        """Only the owner releases a lease; a released task may be leased by anyone.

        If this fails, check that release_lease() deletes only the owner's lease and
        returns whether it did.
        """
        [task_id] = await stored_ids(backend, clock, 1)
        await backend.acquire_lease(task_id, owner="a", lease_seconds=30)
        assert await backend.release_lease(task_id, owner="b") is False
        assert await backend.acquire_lease(task_id, owner="b", lease_seconds=30) is False
        assert await backend.release_lease(task_id, owner="a") is True
        assert await backend.release_lease(task_id, owner="a") is False
        assert await backend.release_lease("t-never-leased", owner="a") is False
        assert await backend.acquire_lease(task_id, owner="b", lease_seconds=30) is True
        clock.advance(60)
        assert [lease.owner for lease in await backend.expired_leases()] == ["b"]

    async def test_expired_leases_oldest_first(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """``expired_leases`` lists expired leases only, oldest expiry first, up to ``limit``.

        If this fails, check ``WHERE expires_at < now ORDER BY expires_at LIMIT n`` and
        that each Lease carries task id, owner and expiry.
        """
        ids = await stored_ids(backend, clock, 5)
        start = clock.now()
        durations = [40, 10, 30, 20, 500]
        for task_id, duration in zip(ids, durations, strict=True):
            await backend.acquire_lease(task_id, owner=f"o-{duration}", lease_seconds=duration)
        assert await backend.expired_leases() == []
        clock.advance(100)
        expected = [
            Lease(
                task_id=ids[i], owner=f"o-{durations[i]}", expires_at=start + seconds(durations[i])
            )
            for i in (1, 3, 2, 0)
        ]
        assert await backend.expired_leases() == expected
        assert await backend.expired_leases(limit=2) == expected[:2]
        await backend.release_lease(ids[3], owner="o-20")
        assert await backend.expired_leases(limit=2) == [expected[0], expected[2]]
