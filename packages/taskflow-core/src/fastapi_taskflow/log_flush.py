"""The ``task_log()`` lines of a long attempt, written while it runs.

An attempt's lines are kept with it and written with its outcome (one write with the
finish for the short tasks that are most of them). An attempt that runs on writes its
lines every ``LOG_FLUSH_INTERVAL`` seconds as well, so that ``store.get()``, the admin
API and the dashboard of every instance show what a long task has logged so far, its
lines since the last write are all a lost instance takes with it, and this process
holds at most an interval's worth of them.

Every interval the flusher takes the unwritten lines of the attempts that were already
running at the previous one (short attempts are left to their outcome's write) and
writes each attempt's lines in one call, all attempts' at once. An attempt's writes
stay in order: its outcome's write waits for a write of its lines still in flight
(:meth:`LogFlusher.settled`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from .context import TaskContext
from .supervision import CancelScopes

__all__ = ["LOG_FLUSH_INTERVAL", "LogFlusher"]

logger = logging.getLogger("fastapi_taskflow")

LOG_FLUSH_INTERVAL = 1.0
"""Seconds between two writes of a running attempt's log lines."""

WriteLines = Callable[[TaskContext], Coroutine[Any, Any, None] | None]
"""Takes the attempt's unwritten lines and writes them (a coroutine on a shared store,
done on return on a store in this process)."""

Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]
"""Starts a task kept until it ends and cancelled at shutdown (``Runtime.spawn``; the
flusher logs a failed write itself)."""


class LogFlusher:
    """Writes the log lines of the attempts running here for longer than an interval.

    Args:
        scopes: the attempts running on this instance.
        write: takes an attempt's unwritten lines and writes them.
        interval: seconds between two rounds.
    """

    def __init__(
        self, scopes: CancelScopes, write: WriteLines, interval: float = LOG_FLUSH_INTERVAL
    ) -> None:
        self._scopes = scopes
        self._write = write
        self.interval = interval
        self.writing: dict[str, asyncio.Task[None]] = {}
        """The attempts whose lines are being written now, by task id."""
        self._seen: set[TaskContext] = set()

    async def run(self, spawn: Spawn) -> None:
        """Write the lines of long attempts every interval; runs until cancelled.

        ``spawn`` starts each write as a task of the runtime: a shutdown cancels it with
        the runtime's other background tasks, after the running tasks ended or were
        interrupted, so nothing writes after the shutdown.
        """
        while True:
            await asyncio.sleep(self.interval)
            await self.flush(spawn)

    async def flush(self, spawn: Spawn) -> None:
        """One round: the unwritten lines of every attempt that was running at the
        previous round and still is, written concurrently (a store that groups writes
        takes them as one); returns when they are written."""
        running: set[TaskContext] = set(self._scopes.scopes.values())
        long_ones = [ctx for ctx in running & self._seen if ctx._entries]
        self._seen = running
        writes = [w for ctx in long_ones if (w := self._start(ctx, spawn)) is not None]
        if writes:
            # a cancelled wait leaves the writes running: lines already taken from their
            # attempts are still written (each attempt's outcome waits for its own)
            await asyncio.wait(writes)

    def _start(self, ctx: TaskContext, spawn: Spawn) -> asyncio.Task[None] | None:
        """Take ``ctx``'s unwritten lines and start writing them (None: written at once,
        or nothing to write)."""
        written = self._write(ctx)
        if written is None:
            return None
        task_id = ctx.task_id
        writing = self.writing[task_id] = spawn(written)
        writing.add_done_callback(partial(self._written, task_id))
        return writing

    def _written(self, task_id: str, writing: asyncio.Task[None]) -> None:
        if self.writing.get(task_id) is writing:
            del self.writing[task_id]
        if not writing.cancelled() and writing.exception() is not None:
            logger.error(
                "writing the log lines of task %s failed: %s", task_id, writing.exception()
            )

    async def settled(self, task_id: str) -> None:
        """Wait until no write of ``task_id``'s lines is in flight (an attempt's
        outcome calls it before writing its own last lines)."""
        while (writing := self.writing.get(task_id)) is not None:
            await asyncio.wait((writing,))
