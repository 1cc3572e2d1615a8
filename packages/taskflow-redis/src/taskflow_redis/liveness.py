"""Instance heartbeats: one hash ``beats`` (instance id -> heartbeat, µs since the epoch).

A heartbeat is the backend clock's now (never the server's time), so a test clock can
make an instance look dead. ``beat`` is one ``HSET`` whatever the number of tasks the
instance holds; which tasks an instance holds is the ownership index the Store keeps
(:meth:`~taskflow_redis.store.RedisStore.owners`).
"""

from __future__ import annotations

from datetime import datetime

from .base import RedisBase, logger
from .codec import as_str
from .connection import driver_errors
from .keys import from_micros

__all__ = ["RedisLiveness"]


class RedisLiveness(RedisBase):
    """The heartbeat part of the Backend protocol; one command each."""

    async def beat(self, instance_id: str) -> None:
        """See :meth:`fastapi_taskflow.protocols.Backend.beat`; one ``HSET``."""
        client = self._redis()
        now = self._now_us()
        with driver_errors(f"recording the heartbeat of {instance_id!r}", self._where()):
            await client.hset(self._keys.beats, instance_id, str(now))

    async def heartbeats(self) -> dict[str, datetime]:
        """See :meth:`fastapi_taskflow.protocols.Backend.heartbeats`; one ``HGETALL``."""
        client = self._redis()
        with driver_errors("reading heartbeats", self._where()):
            raw = await client.hgetall(self._keys.beats)
        beats: dict[str, datetime] = {}
        for key, value in raw.items():
            try:
                beats[as_str(key)] = from_micros(int(as_str(value)))
            except (ValueError, OverflowError):
                logger.warning("ignored a corrupt heartbeat of %r in Redis", as_str(key))
        return beats

    async def forget_instance(self, instance_id: str) -> None:
        """See :meth:`fastapi_taskflow.protocols.Backend.forget_instance`; one ``HDEL``."""
        client = self._redis()
        with driver_errors(f"forgetting instance {instance_id!r}", self._where()):
            await client.hdel(self._keys.beats, instance_id)
