"""Named locks (periodic schedules): one hash ``locks`` (name -> ``<expiry µs>|<owner>``).

Expiry is judged by the injected clock, never by Redis TTLs, so a test clock can expire
a lock.
"""

from __future__ import annotations

from datetime import timedelta

from .base import RedisBase
from .keys import micros

__all__ = ["RedisLocks"]


class RedisLocks(RedisBase):
    """The lock part of the Backend protocol; one script call each."""

    async def acquire_lock(self, name: str, *, owner: str, ttl_seconds: float) -> bool:
        """See :meth:`fastapi_taskflow.protocols.Backend.acquire_lock`."""
        now = self.clock.now()
        expires = now + timedelta(seconds=ttl_seconds)
        args: list[str | int] = [name, owner, micros(now), micros(expires)]
        return bool(int(await self._run("acquire_lock", args, f"taking lock {name!r}")))

    async def release_lock(self, name: str, *, owner: str) -> bool:
        """See :meth:`fastapi_taskflow.protocols.Backend.release_lock`."""
        reply = await self._run("release_lock", [name, owner], f"releasing lock {name!r}")
        return bool(int(reply))
