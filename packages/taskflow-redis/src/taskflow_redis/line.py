"""Connections of the backend's own for its script calls, one call at a time on each.

``Redis.execute_command`` costs about 100 µs of CPU per call on top of the round trip: a
pool checkout and release, the retry wrapper, redis-py's metrics hooks, and on Python
3.11 a task per send for the socket timeout (``asyncio.wait_for``). A backend's script
calls mostly come from the engine's group commit, at most ``concurrent_writes`` (two)
at a time, so they get as many connections that are not in the pool: the command is
packed, sent and its reply read on one directly, under one timer for the whole
exchange. A call that finds every line in use goes through the client as before, so
concurrency is unchanged.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection

if sys.version_info >= (3, 11):
    from asyncio import timeout as _timeout
else:  # pragma: no cover - redis-py depends on async-timeout before 3.11.3
    from async_timeout import timeout as _timeout

__all__ = ["DirectLine", "direct_lines"]


def direct_lines(client: object, count: int) -> tuple[DirectLine, ...]:
    """``count`` lines for ``client``'s server (one per group-commit write the engine
    may have in flight), or none where calls must go through the client.

    Only a standalone ``redis.asyncio.Redis`` gets them (a cluster client routes each
    call to a node; a single-connection client was asked for exactly one connection).
    A line connects on its first call.
    """
    if type(client) is not Redis or client.connection is not None:
        return ()
    pool = client.connection_pool
    return tuple(DirectLine(pool.make_connection()) for _ in range(count))  # type: ignore[no-untyped-call]


class DirectLine:
    """One connection used by one call at a time, reconnecting after any failure.

    It is made like the pool's connections (same class and settings: address, TLS,
    credentials, database, RESP version, ``decode_responses``), except that the socket
    timeout bounds the whole exchange (connect, send, reply) instead of each read and
    write. It takes no part in redis-py's retries: taskflow's callers retry what is
    safe to retry.
    """

    def __init__(self, connection: AbstractConnection) -> None:
        self._conn = connection
        self._read_limit: float | None = connection.socket_timeout
        self._connect_limit: float | None = connection.socket_connect_timeout
        connection.socket_timeout = None  # one timer per exchange, below
        # redis-py 8 renamed can_read_destructive (which it deprecates) to can_read.
        self._can_read = getattr(connection, "can_read", None) or connection.can_read_destructive
        self._loop: asyncio.AbstractEventLoop | None = None
        self._busy = False
        self.calls = 0
        """Commands sent on this line (for tests)."""

    def free(self) -> bool:
        """True when no call is in flight on the line and it belongs to this event loop."""
        if self._busy:
            return False
        loop = self._loop
        return loop is None or loop is asyncio.get_running_loop()

    async def call(self, *args: Any) -> Any:
        """Send one command and return its reply, as ``execute_command`` would.

        Only when :meth:`free`. An error reply is raised as redis-py raises it (the
        connection stays usable); any other failure (connection lost, timeout,
        cancellation) closes the connection, and the next call reconnects.

        Raises:
            redis.exceptions.RedisError: the server answered with an error, or could not
                be reached (``ConnectionError``, ``TimeoutError``).
        """
        conn = self._conn
        self._busy = True
        self._loop = asyncio.get_running_loop()
        self.calls += 1
        limit = self._read_limit
        try:
            if conn.is_connected:
                await self._drop_if_stale()
            if limit is not None and not conn.is_connected:
                connect = self._connect_limit
                limit = None if connect is None else limit + connect
            async with _timeout(limit):
                await conn.send_packed_command(conn.pack_command(*args))
                return await conn.read_response()
        except rx.ResponseError:
            raise  # a whole error reply was read: the connection is in step
        except (TimeoutError, asyncio.TimeoutError) as exc:
            await conn.disconnect(nowait=True)
            raise rx.TimeoutError(f"no reply from Redis within {limit} s") from exc
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        finally:
            self._busy = False

    async def _drop_if_stale(self) -> None:
        """Close the connection if the server closed it (idle timeout, restart, ``CLIENT
        KILL``) or left data on it since the last call, as the pool checks a connection
        before lending it: the next send reconnects instead of failing. Costs no system
        call (the event loop has already seen the EOF)."""
        try:
            stale = bool(await self._can_read())
        except (rx.ConnectionError, OSError):
            stale = True
        if stale:
            await self._conn.disconnect()

    async def close(self) -> None:
        """Close the connection (from the loop that used it; else it is left to the GC)."""
        loop = self._loop
        if loop is None or loop is asyncio.get_running_loop():
            await self._conn.disconnect()
        self._loop = None
