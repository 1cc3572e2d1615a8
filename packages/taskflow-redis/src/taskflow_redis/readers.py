"""Readers of the event fan-out: one sorted set ``readers`` (reader id, scored by the
µs its announcement expires at).

Expiry is judged by the backend clock (never by Redis TTLs), as heartbeats and locks
are, so a test clock can expire an announcement. Instances read the set about twice a
second and publish their tasks' events only while it holds a live reader (see
:mod:`fastapi_taskflow.fanout`).
"""

from __future__ import annotations

from datetime import timedelta

from .base import RedisBase
from .codec import as_str
from .connection import driver_errors
from .keys import micros

__all__ = ["RedisReaders"]


class RedisReaders(RedisBase):
    """The readers part of the Backend protocol."""

    async def announce_reader(self, reader_id: str, *, ttl_seconds: float) -> None:
        """See :meth:`fastapi_taskflow.protocols.Backend.announce_reader`: a ``ZADD``
        of this one, then a ``ZREMRANGEBYSCORE`` of the expired ones (two commands, so
        they run on a cluster's pipeline-less clients too)."""
        client = self._redis()
        now = self.clock.now()
        expires = micros(now + timedelta(seconds=ttl_seconds))
        key = self._keys.readers
        with driver_errors("announcing a reader of events", self._where()):
            await client.zadd(key, {reader_id: expires})
            await client.zremrangebyscore(key, "-inf", micros(now))

    async def withdraw_reader(self, reader_id: str) -> None:
        """See :meth:`fastapi_taskflow.protocols.Backend.withdraw_reader`; one ``ZREM``."""
        client = self._redis()
        with driver_errors("withdrawing a reader of events", self._where()):
            await client.zrem(self._keys.readers, reader_id)

    async def readers(self) -> set[str]:
        """See :meth:`fastapi_taskflow.protocols.Backend.readers`; one ``ZRANGEBYSCORE``."""
        client = self._redis()
        now = micros(self.clock.now())
        with driver_errors("reading the readers of events", self._where()):
            found = await client.zrangebyscore(self._keys.readers, f"({now}", "+inf")
        return {as_str(reader) for reader in found}
