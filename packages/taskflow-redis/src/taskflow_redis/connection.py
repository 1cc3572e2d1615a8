"""Making redis-py clients (from a URL, a client or a pool) and translating driver errors."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Union

from redis import exceptions as rx
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from fastapi_taskflow.errors import BackendUnavailableError
from fastapi_taskflow.redaction import HOST_MASK, hide_hosts, mask_secrets

from .errors import RedisBackendError
from .urls import redact

__all__ = [
    "DRIVER_ERRORS",
    "UNAVAILABLE",
    "POOL_MAX_CONNECTIONS",
    "POOL_TIMEOUT",
    "AnyRedis",
    "Connector",
    "blocking_pool",
    "driver_errors",
    "translated",
]

POOL_MAX_CONNECTIONS = 50
"""Connections per pool of a URL backend (``?max_connections=`` in the URL overrides it).

The engine opens a few pools (requests, the heartbeat, blocking reads), so an instance
holds at most a few times this many connections; Redis serves thousands."""

POOL_TIMEOUT = 10.0
"""Seconds a call waits for a free pooled connection before it is reported as the store
being unavailable (``?timeout=`` in the URL overrides it). A burst of calls waits its
turn; only a pool stuck this long counts as an outage."""

AnyRedis = Union["Redis", "RedisCluster"]
"""A standalone or a cluster asyncio client."""

UNAVAILABLE: tuple[type[BaseException], ...] = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.ClusterDownError,
    rx.TryAgainError,
    rx.MasterDownError,
    OSError,
)
"""redis-py errors that mean the server could not be reached."""

DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    *UNAVAILABLE,
    rx.RedisClusterException,
    rx.RedisError,
)
"""Every redis-py error :func:`translated` turns into a taskflow error."""


def translated(exc: BaseException, action: str, where: str) -> Exception | None:
    """The taskflow error for a redis-py error, or None when ``exc`` is not one.

    The message quotes the driver's, with passwords and the server's address masked.

    Args:
        exc: what the driver raised.
        action: what was being done, for the message ("claiming from queue 'default'").
        where: the server, for the message.
    """
    said = mask_secrets(str(exc))
    if isinstance(exc, UNAVAILABLE):
        return BackendUnavailableError(
            f"Redis at {where} is unreachable while {action} ({said}); check that the "
            "server is running and the URL is right, then retry"
        )
    if isinstance(exc, rx.RedisClusterException):
        return BackendUnavailableError(
            f"Redis Cluster at {where} is not usable while {action} ({said}); check that "
            "every node is up and the cluster state is ok"
        )
    if isinstance(exc, rx.RedisError):
        return RedisBackendError(f"Redis at {where} refused a command while {action}: {said}")
    return None


@contextmanager
def driver_errors(action: str, where: str) -> Iterator[None]:
    """Re-raise redis-py errors as taskflow errors, keeping the cause.

    Args:
        action: what was being done, for the message ("claiming from queue 'default'").
        where: the server, for the message.

    Raises:
        BackendUnavailableError: the server could not be reached.
        RedisBackendError: the server answered with an error.
    """
    try:
        yield
    except DRIVER_ERRORS as exc:
        error = translated(exc, action, where)
        if error is None:  # pragma: no cover - every caught type is translated
            raise
        raise error from exc


@dataclass
class Connector:
    """Builds the client of one backend, and an independent twin for a fork.

    Attributes:
        build: returns a new client (called on ``open()``).
        describe: the server, for messages (no password).
        owns_client: close the client on ``close()``.
        owns_pool: also close its connection pool.
    """

    build: Callable[[], AnyRedis]
    describe: str
    owns_client: bool = True
    owns_pool: bool = True
    origin: AnyRedis | ConnectionPool | None = None

    @classmethod
    def from_url(cls, url: str, *, cluster: bool) -> Connector:
        """Connect by URL; the backend owns what it creates."""
        if cluster:
            return cls(lambda: RedisCluster.from_url(url), redact(url))
        return cls(lambda: Redis(connection_pool=blocking_pool(url)), redact(url))

    @classmethod
    def from_client(cls, client: AnyRedis) -> Connector:
        """Use a caller's client; the caller keeps ownership (``close()`` leaves it open)."""
        return cls(
            lambda: client, _describe(client), owns_client=False, owns_pool=False, origin=client
        )

    @classmethod
    def from_pool(cls, pool: ConnectionPool) -> Connector:
        """Use a caller's pool through a client of our own; the pool stays open."""
        return cls(
            lambda: Redis(connection_pool=pool),
            _describe_pool(pool),
            owns_pool=False,
            origin=pool,
        )

    def twin(self) -> Connector:
        """Return a connector over the same server that shares no connection with this one.

        A URL connector builds a fresh client each time, so it is its own twin; a caller's
        client or pool is copied (same connection settings, new connections).
        """
        origin = self.origin
        if origin is None:
            return self
        if isinstance(origin, RedisCluster):
            return Connector(_cluster_twin(origin), self.describe)
        pool = origin.connection_pool if isinstance(origin, Redis) else origin
        return Connector(lambda: Redis(connection_pool=_pool_twin(pool)), self.describe)

    async def close(self, client: AnyRedis) -> None:
        """Close ``client`` as far as this connector owns it."""
        if not self.owns_client:
            return
        if isinstance(client, RedisCluster):
            await client.aclose()
        else:
            await client.aclose(close_connection_pool=self.owns_pool)


def blocking_pool(url: str) -> BlockingConnectionPool:
    """Return a pool for ``url`` that waits (up to ``POOL_TIMEOUT``) for a free connection.

    redis-py's default pool raises at once when every connection is in use, which would
    turn a burst of requests on a healthy server into "store unavailable" errors.
    ``max_connections`` and ``timeout`` given in the URL take precedence.
    """
    return BlockingConnectionPool.from_url(
        url, max_connections=POOL_MAX_CONNECTIONS, timeout=POOL_TIMEOUT
    )


def _pool_twin(pool: ConnectionPool) -> ConnectionPool:
    return ConnectionPool(
        connection_class=pool.connection_class,
        max_connections=pool.max_connections,
        **pool.connection_kwargs,
    )


def _cluster_twin(client: RedisCluster) -> Callable[[], AnyRedis]:
    nodes = [(node.host, node.port) for node in client.get_nodes() or client.startup_nodes]
    accepted = set(inspect.signature(RedisCluster.__init__).parameters)
    kwargs = {
        k: v
        for k, v in client.connection_kwargs.items()
        if k in accepted and k not in ("host", "port", "startup_nodes", "retry")
    }

    def build() -> AnyRedis:
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes], **kwargs)

    return build


def _describe_pool(pool: ConnectionPool) -> str:
    """The server of a caller's pool, for messages: its address masked (and hidden in
    the driver's texts from now on)."""
    kw: dict[str, Any] = pool.connection_kwargs
    if "path" in kw:
        return f"unix://{kw['path']}"
    hide_hosts([kw.get("host", "localhost")])
    return f"{HOST_MASK}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


def _describe(client: AnyRedis) -> str:
    if isinstance(client, RedisCluster):
        nodes = client.get_nodes() or client.startup_nodes
        hide_hosts(n.host for n in nodes)
        return "cluster " + ",".join(f"{HOST_MASK}:{n.port}" for n in nodes[:3])
    return _describe_pool(client.connection_pool)
