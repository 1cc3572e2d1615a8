"""The Redis backend: Store and Backend on one redis-py asyncio client."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from redis.asyncio import ConnectionPool
from redis.asyncio.cluster import RedisCluster

from fastapi_taskflow.clock import Clock, SystemClock
from fastapi_taskflow.errors import BackendURLError

from .base import logger
from .claims import ClaimTokens
from .coalesce import Coalescer
from .connection import AnyRedis, Connector, driver_errors
from .events import RedisEvents
from .keys import KeySpace
from .liveness import RedisLiveness
from .locks import RedisLocks
from .queue import RedisQueues
from .readers import RedisReaders
from .scripts import SHAS, source
from .store import RedisStore
from .urls import parse_redis_url

__all__ = ["DEFAULT_PREFIX", "DEFAULT_RETENTION", "DEFAULT_URL", "RedisBackend", "from_url"]

DEFAULT_URL: Final = "redis://localhost:6379/0"
"""The server used when neither a URL, a client nor a pool is given."""

DEFAULT_PREFIX: Final = "taskflow"
"""The key namespace used when none is given."""

DEFAULT_RETENTION: Final = timedelta(days=7)
"""How long finished tasks are kept when no retention is given."""


class _Default:
    """Marks an argument left at its default (``None`` is a meaningful value)."""


_DEFAULT: Final = _Default()


class RedisBackend(RedisStore, RedisQueues, RedisLiveness, RedisLocks, RedisReaders, RedisEvents):
    """Durable tasks, queues, heartbeats, locks, readers and events in Redis (or a Cluster).

    Pass one of ``url``, ``client`` or ``connection_pool``; with none of them the
    backend connects to ``redis://localhost:6379/0``.

    Args:
        url: ``redis://``, ``rediss://`` or ``unix://`` URL; may carry ``?prefix=``,
            ``?cluster=true`` and ``?retention=SECONDS|none``.
        client: an existing ``redis.asyncio.Redis`` or ``RedisCluster``; the backend
            uses it and never closes it.
        connection_pool: an existing ``redis.asyncio.ConnectionPool``; the backend
            makes a client on it and leaves the pool open on ``close()``.
        prefix: key namespace (default ``taskflow``); keys are ``{prefix}:...``, one
            Redis Cluster hash slot per prefix.
        clock: where time comes from (default: the system clock). Every expiry is
            judged by this clock, never by the server's.
        retention: how long finished tasks are kept before they are deleted (default
            7 days, ``None`` keeps them until :meth:`purge`). A float is seconds.

    Raises:
        BackendURLError: the URL is malformed.
        ValueError: more than one of ``url``, ``client``, ``connection_pool``; or a
            prefix with braces.
    """

    durable = True
    concurrent_writes = 2
    """The engine may have two group-commit writes in flight at once (see
    ``fastapi_taskflow.protocols.TaskBackend``): while one script call runs on the
    server, the next batch is built and sent on another connection."""

    def __init__(
        self,
        url: str | None = None,
        *,
        client: AnyRedis | None = None,
        connection_pool: ConnectionPool | None = None,
        prefix: str | None = None,
        clock: Clock | None = None,
        retention: timedelta | float | _Default | None = _DEFAULT,
    ) -> None:
        if sum(x is not None for x in (url, client, connection_pool)) > 1:
            raise BackendURLError("pass only one of url=, client= or connection_pool=")
        url_prefix, url_retention = None, None
        if client is not None:
            connector = Connector.from_client(client)
        elif connection_pool is not None:
            connector = Connector.from_pool(connection_pool)
        else:
            parsed = parse_redis_url(url or DEFAULT_URL)
            connector = Connector.from_url(parsed.url, cluster=parsed.cluster)
            url_prefix, url_retention = parsed.prefix, parsed.retention
        self.clock = clock or SystemClock()
        self._keys = KeySpace(prefix or url_prefix or DEFAULT_PREFIX)
        self.retention = _retention(retention, url_retention)
        self._connector = connector
        self._client = None
        self._lines = ()
        self._opened = False
        self._enqueues = Coalescer(self._enqueue_batch)
        self._claims = ClaimTokens()

    @property
    def prefix(self) -> str:
        """The key namespace (keys are ``{prefix}:...``)."""
        return self._keys.prefix

    @property
    def client(self) -> AnyRedis:
        """The redis-py client this backend uses (built on first use)."""
        return self._redis()

    async def open(self) -> None:
        """Check that the server answers and load the Lua scripts it lacks. Idempotent.

        Three round trips when the scripts are loaded already: ``PING``, one
        ``SCRIPT EXISTS`` for all of them, and the layout check. A prefix last written
        by taskflow-redis 0.1 (per-task leases) is upgraded once: the owners of its
        PENDING and RUNNING tasks are indexed (from the record, else from the old lease)
        and the lease keys dropped, in one script call.

        Raises:
            BackendUnavailableError: the server cannot be reached.
        """
        if self._opened:
            return
        client = self._redis()
        with driver_errors("connecting", self._where()):
            if isinstance(client, RedisCluster):
                await client.initialize()
            await client.ping()
            known = await client.script_exists(*SHAS.values())
            for name, loaded in zip(SHAS, known, strict=True):
                if not loaded:
                    await client.script_load(source(name))
        migrated = int(await self._run("migrate", [], "upgrading the key layout"))
        if migrated >= 0:
            logger.info(
                "upgraded the Redis prefix %r to the heartbeat layout (%d active tasks "
                "indexed by owner)",
                self.prefix,
                migrated,
            )
        self._opened = True

    async def close(self) -> None:
        """Close the connections this backend made (its pool's and its direct line's).
        Idempotent.

        A client passed as ``client=`` (or the pool passed as ``connection_pool=``)
        stays open: its owner closes it.
        """
        await self._enqueues.drain()
        client, self._client = self._client, None
        lines, self._lines = self._lines, ()
        self._opened = False
        with driver_errors("closing", self._where()):
            try:
                for line in lines:
                    await line.close()
            finally:
                if client is not None:
                    await self._connector.close(client)

    def fork(self) -> RedisBackend:
        """Return an unopened backend on its own client, same server, prefix and clock.

        For a backend made from a URL the fork connects by the same URL; for one made
        from a caller's client or pool, the fork copies its connection settings.
        """
        twin = RedisBackend.__new__(RedisBackend)
        twin.clock = self.clock
        twin._keys = self._keys
        twin.retention = self.retention
        twin._connector = self._connector.twin()
        twin._client = None
        twin._lines = ()
        twin._opened = False
        twin._enqueues = Coalescer(twin._enqueue_batch)
        twin._claims = ClaimTokens()
        return twin

    async def delete_all(self, *, batch: int = 500) -> int:
        """Delete every key under this backend's prefix; return how many were deleted.

        For tests and for decommissioning a namespace; it uses ``SCAN``, never ``KEYS``.
        """
        client = self._redis()
        deleted = 0
        with driver_errors("deleting the prefix's keys", self._where()):
            doomed: list[bytes | str] = []
            async for key in client.scan_iter(match=self._keys.pattern, count=batch):
                doomed.append(key)
                if len(doomed) >= batch:
                    deleted += int(await client.delete(*doomed))
                    doomed = []
            if doomed:
                deleted += int(await client.delete(*doomed))
        return deleted

    def __repr__(self) -> str:
        return f"RedisBackend({self._where()}, prefix={self.prefix!r})"


def _retention(
    given: timedelta | float | _Default | None, from_url: float | None
) -> timedelta | None:
    if isinstance(given, _Default):
        if from_url is None:
            return DEFAULT_RETENTION
        return None if from_url < 0 else timedelta(seconds=from_url)
    if given is None:
        return None
    value = given if isinstance(given, timedelta) else timedelta(seconds=given)
    if value <= timedelta(0):
        raise BackendURLError("retention must be positive, or None to keep finished tasks")
    return value


def from_url(url: str, *, clock: Clock) -> RedisBackend:
    """Build an unopened backend for a ``redis://``, ``rediss://`` or ``unix://`` URL.

    This is the ``taskflow.backends`` entry point.

    Raises:
        BackendURLError: the URL is malformed.
    """
    return RedisBackend(url, clock=clock)
