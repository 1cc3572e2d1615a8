"""State shared by the Store, queue, liveness, lock and event parts of the Redis backend."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from redis.exceptions import NoScriptError

from fastapi_taskflow.clock import Clock
from fastapi_taskflow.redaction import mask_log_records

from .connection import DRIVER_ERRORS, AnyRedis, Connector, translated
from .keys import KeySpace, micros
from .line import DirectLine, direct_lines
from .scripts import SHAS, source

__all__ = ["RedisBase", "logger"]

logger = mask_log_records(logging.getLogger("taskflow_redis"))

ArgT = str | int | float | bytes


class RedisBase:
    """A client, the key space and the clock; runs the Lua scripts.

    The client is built on first use without any I/O (redis-py connects lazily), so a
    backend works once constructed; ``open()`` additionally checks the server and loads
    the scripts.
    """

    clock: Clock
    retention: timedelta | None
    _keys: KeySpace
    _connector: Connector
    _client: AnyRedis | None
    _lines: tuple[DirectLine, ...]
    concurrent_writes: int

    def _redis(self) -> AnyRedis:
        client = self._client
        if client is None:
            client = self._client = self._connector.build()
            self._lines = direct_lines(client, self.concurrent_writes)
        return client

    def _where(self) -> str:
        return self._connector.describe

    async def _run(self, name: str, args: Sequence[ArgT], action: str) -> Any:
        """Run script ``name`` with ``(base, *args)`` in one round trip, errors translated.

        ``EVALSHA`` with the script's precomputed SHA, on the backend's direct line when
        it is free (see :mod:`taskflow_redis.line`), else through the client; a server
        that does not know the script (restarted, ``SCRIPT FLUSH``, another node) gets
        it once and the call is retried.
        """
        client = self._client or self._redis()
        keys = self._keys
        sha = SHAS[name]
        try:
            try:
                return await self._evalsha(client, sha, (keys.seq, keys.base, *args))
            except NoScriptError:
                await client.script_load(source(name))
                return await self._evalsha(client, sha, (keys.seq, keys.base, *args))
        except DRIVER_ERRORS as exc:
            error = translated(exc, action, self._where())
            if error is None:  # pragma: no cover - every caught type is translated
                raise
            raise error from exc

    async def _evalsha(self, client: AnyRedis, sha: str, args: tuple[ArgT, ...]) -> Any:
        """``EVALSHA sha 1 *args`` on a free direct line, else through the client."""
        for line in self._lines:
            if line.free():
                return await line.call("EVALSHA", sha, 1, *args)
        return await client.evalsha(sha, 1, *args)

    def _now_us(self) -> int:
        return micros(self.clock.now())

    def _retention_cutoff(self, now: datetime) -> str:
        """The finished-before bound for automatic clean-up, or '' when keeping forever."""
        if self.retention is None:
            return ""
        return str(micros(now - self.retention))
