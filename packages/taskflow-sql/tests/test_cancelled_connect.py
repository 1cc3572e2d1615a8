"""A call cancelled while its pooled connection is being made leaves nothing behind.

A shutdown cancels workers and heartbeats wherever they are, sometimes in the middle of
a pool checkout that is opening a new connection. asyncpg cancelled after its socket
connected but before ``create_connection()`` returned leaves the future of the server's
answer to its SSL request to fail later ("unexpected connection_lost() call") with
nobody to await it: asyncio then logs "Future exception was never retrieved", which the
anyio test runner turns into a failure of whatever test is running (a rare failure of
``test_steady_load_with_hostile_values[postgres]``). The checkout now finishes, and its
connection goes back to the pool, before the cancellation goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from typing import Any

import pytest

from taskflow_sql import SQLBackend

pytestmark = pytest.mark.anyio

# A new asyncpg connection takes a few turns of the loop (a read, a few more): the window
# lies within these.
TURNS = 40


async def test_a_read_cancelled_while_connecting_leaves_no_failed_future(
    postgres_place: Any,
) -> None:
    backend = SQLBackend(
        postgres_place.url, table_prefix=postgres_place.prefix, schema=postgres_place.schema
    )
    await backend.open()
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        pool_of = lambda: backend.engine.sync_engine.pool  # noqa: E731 - a new pool per dispose
        for turns in range(TURNS):
            await backend.engine.dispose()  # an empty pool: the read makes a new connection
            reading = asyncio.ensure_future(backend.queue_length("default"))
            for _ in range(turns):
                await asyncio.sleep(0)
            reading.cancel()  # a read that has already ended is left as it is
            with contextlib.suppress(asyncio.CancelledError):
                await reading
            assert pool_of().checkedout() == 0, turns
            for _ in range(5):
                await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        gc.collect()
        assert [
            (context.get("message"), repr(context.get("exception"))) for context in reported
        ] == []
        assert await backend.queue_length("default") == 0  # the pool works afterwards
    finally:
        loop.set_exception_handler(previous)
        await backend.close()
