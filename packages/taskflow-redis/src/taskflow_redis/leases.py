"""Leases on tasks (owner and expiry, renewed by heartbeat) and named locks.

Leases are a sorted set ``leases`` (id scored by expiry in microseconds, so expired ones
are a range query) and a hash ``lease:owners`` (id -> owner). Locks are one hash
``locks`` (name -> ``<expiry µs>|<owner>``). Expiry is judged by the injected clock,
never by Redis TTLs, so a test clock can expire them.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta

from fastapi_taskflow.models import Lease

from .base import RedisBase
from .codec import as_str
from .keys import from_micros, micros

__all__ = ["RedisLeases"]


class RedisLeases(RedisBase):
    """The lease and lock part of the Backend protocol; one script call each."""

    def _expiry(self, seconds: float) -> tuple[int, int]:
        now = self.clock.now()
        return micros(now), micros(now + timedelta(seconds=seconds))

    async def acquire_lease(self, task_id: str, *, owner: str, lease_seconds: float) -> bool:
        """See :meth:`fastapi_taskflow.protocols.Backend.acquire_lease`."""
        now, expires = self._expiry(lease_seconds)
        args: list[str | int] = [task_id, owner, now, expires]
        return bool(int(await self._run("acquire_lease", args, f"leasing {task_id}")))

    async def renew_leases(
        self, task_ids: Collection[str], *, owner: str, lease_seconds: float
    ) -> set[str]:
        """See :meth:`fastapi_taskflow.protocols.Backend.renew_leases`."""
        if not task_ids:
            return set()
        _, expires = self._expiry(lease_seconds)
        reply = await self._run(
            "renew_leases", [owner, expires, *task_ids], f"renewing leases of {owner!r}"
        )
        return {as_str(item) for item in reply}

    async def release_lease(self, task_id: str, *, owner: str) -> bool:
        """See :meth:`fastapi_taskflow.protocols.Backend.release_lease`."""
        reply = await self._run("release_lease", [task_id, owner], f"releasing {task_id}")
        return bool(int(reply))

    async def expired_leases(self, *, limit: int = 100) -> list[Lease]:
        """See :meth:`fastapi_taskflow.protocols.Backend.expired_leases`."""
        if limit <= 0:
            return []
        reply = await self._run("expired_leases", [self._now_us(), limit], "listing expired leases")
        return [
            Lease(
                task_id=as_str(reply[i]),
                owner=as_str(reply[i + 1]),
                expires_at=from_micros(int(float(as_str(reply[i + 2])))),
            )
            for i in range(0, len(reply) - 2, 3)
        ]

    async def acquire_lock(self, name: str, *, owner: str, ttl_seconds: float) -> bool:
        """See :meth:`fastapi_taskflow.protocols.Backend.acquire_lock`."""
        now, expires = self._expiry(ttl_seconds)
        args: list[str | int] = [name, owner, now, expires]
        return bool(int(await self._run("acquire_lock", args, f"taking lock {name!r}")))

    async def release_lock(self, name: str, *, owner: str) -> bool:
        """See :meth:`fastapi_taskflow.protocols.Backend.release_lock`."""
        reply = await self._run("release_lock", [name, owner], f"releasing lock {name!r}")
        return bool(int(reply))
