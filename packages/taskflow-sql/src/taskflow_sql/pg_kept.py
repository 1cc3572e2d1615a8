"""One pooled PostgreSQL connection kept checked out for the asyncpg fast paths.

``get`` (:mod:`taskflow_sql.fastget`) and the hot writes (:mod:`taskflow_sql.pg_writes`)
send one statement each straight to asyncpg; a pool checkout and return would cost
about as much as the statement, so the backend keeps one connection for them (one, so
the pool keeps the rest: a small ``pool_size`` is not used up by the fast paths).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from .context import SQLContext
from .executor import connect, release

__all__ = ["KeptConnection"]


class KeptConnection:
    """One pooled connection kept checked out, and its asyncpg driver connection.

    ``async with kept.driver() as driver`` hands out the kept connection's driver, or,
    while another caller uses it, the driver of a connection checked out for the call.
    A connection whose statement failed is invalidated (never reused), and the kept one
    is renewed after the engine's ``pool_recycle`` seconds, as the pool would.
    """

    def __init__(self, ctx: SQLContext) -> None:
        self._ctx = ctx
        self._kept: AsyncConnection | None = None
        self._driver: Any = None
        self._since = 0.0
        self._busy = False
        self._closed = False
        recycle = getattr(ctx.engine.sync_engine.pool, "_recycle", -1)
        self._recycle = float(recycle) if recycle and recycle > 0 else float("inf")

    @contextlib.asynccontextmanager
    async def driver(self) -> AsyncIterator[Any]:
        """The asyncpg connection to run one statement on (autocommit)."""
        if self._busy:
            conn = await connect(self._ctx, write=False)
            try:
                driver = (await conn.get_raw_connection()).driver_connection
                yield driver
            except BaseException:
                await _invalidate(conn)
                raise
            finally:
                await release(conn)
            return
        self._busy = True
        try:
            if self._kept is not None and (
                self._driver.is_closed() or time.monotonic() - self._since > self._recycle
            ):
                await self._drop()
            if self._kept is None:
                kept = await connect(self._ctx, write=False)
                try:
                    self._driver = (await kept.get_raw_connection()).driver_connection
                except BaseException:  # cancelled, say: the checkout is not kept, so return it
                    with contextlib.suppress(Exception):
                        await release(kept)
                    raise
                self._kept, self._since = kept, time.monotonic()
            try:
                yield self._driver
            except BaseException:
                await self._drop()
                raise
        finally:
            self._busy = False
            if self._closed:  # close() ran while this call held it: give it back now
                with contextlib.suppress(Exception):
                    await self.close()

    async def _drop(self) -> None:
        kept, self._kept, self._driver = self._kept, None, None
        if kept is not None:
            await _invalidate(kept)
            with contextlib.suppress(Exception):
                await release(kept)

    async def close(self) -> None:
        """Return the kept connection to the pool; a call holding it when this runs
        (checking it out, say) returns it when it is done, instead of keeping it."""
        self._closed = True
        kept, self._kept, self._driver = self._kept, None, None
        if kept is not None:
            await release(kept)


async def _invalidate(conn: AsyncConnection) -> None:
    with contextlib.suppress(Exception):
        await conn.invalidate()
