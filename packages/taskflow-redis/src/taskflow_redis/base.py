"""State shared by the Store, queue, liveness, lock and event parts of the Redis backend."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from redis.commands.core import AsyncScript

from fastapi_taskflow.clock import Clock

from .connection import AnyRedis, Connector, driver_errors
from .keys import KeySpace, micros
from .scripts import SCRIPT_NAMES, source

__all__ = ["RedisBase", "logger"]

logger = logging.getLogger("taskflow_redis")

ArgT = str | int | float | bytes


class RedisBase:
    """A client, its registered scripts, the key space and the clock.

    The client is built on first use without any I/O (redis-py connects lazily), so a
    backend works once constructed; ``open()`` additionally checks the server and loads
    the scripts.
    """

    clock: Clock
    retention: timedelta | None
    _keys: KeySpace
    _connector: Connector
    _client: AnyRedis | None
    _scripts: dict[str, AsyncScript]

    def _redis(self) -> AnyRedis:
        client = self._client
        if client is None:
            client = self._client = self._connector.build()
            self._scripts = {name: client.register_script(source(name)) for name in SCRIPT_NAMES}
        return client

    def _where(self) -> str:
        return self._connector.describe

    async def _run(self, name: str, args: Sequence[ArgT], action: str) -> Any:
        """Run script ``name`` with ``(base, *args)`` in one round trip, errors translated."""
        self._redis()
        script = self._scripts[name]
        with driver_errors(action, self._where()):
            return await script(keys=[self._keys.seq], args=[self._keys.base, *args])

    def _now_us(self) -> int:
        return micros(self.clock.now())

    def _retention_cutoff(self, now: datetime) -> str:
        """The finished-before bound for automatic clean-up, or '' when keeping forever."""
        if self.retention is None:
            return ""
        return str(micros(now - self.retention))
