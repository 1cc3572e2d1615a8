"""Coalescing: calls made in the same event-loop tick share one script call.

The engine enqueues the queued tasks of a flushed batch with ``asyncio.gather`` over
``enqueue()``; each call joins a pending batch, and the batch is sent once the loop has
run everything that was ready (``call_soon``), so N concurrent calls cost one round trip
instead of N. Each item still behaves exactly like its own call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Coalescer"]

T = TypeVar("T")

MAX_BATCH = 1000
"""Items per script call at most; a larger tick is sent in several calls."""


class Coalescer(Generic[T]):
    """Gathers items from concurrent callers and sends them with one ``send`` per tick.

    Args:
        send: writes a batch of items (one round trip); its exception is raised to every
            caller of that batch.
    """

    def __init__(self, send: Callable[[Sequence[T]], Awaitable[object]]) -> None:
        self._send = send
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> None:
        """Add ``item`` to this tick's batch and wait until the batch is written."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._pending.append((item, done))
        if len(self._pending) == 1:
            loop.call_soon(self._start)
        await done

    async def drain(self) -> None:
        """Wait until every batch already started has been written (or has failed)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._flush(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self, batch: list[tuple[T, asyncio.Future[None]]]) -> None:
        for start in range(0, len(batch), MAX_BATCH):
            chunk = batch[start : start + MAX_BATCH]
            try:
                await self._send([item for item, _ in chunk])
            except BaseException as exc:  # handed to the callers, who re-raise it
                for _, done in chunk:
                    if not done.done():
                        done.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for _, done in chunk:
                if not done.done():
                    done.set_result(None)
