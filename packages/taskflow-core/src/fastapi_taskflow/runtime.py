"""The engine's state that belongs to one event loop.

asyncio objects (tasks, events, timers) are bound to the loop that made them. A
``TaskManager`` can outlive a loop (a test client opens one per test), so everything
loop-bound lives in a :class:`Runtime`, made on first use in a loop and replaced when
the manager finds itself on a new loop after the old one closed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from typing import Any

__all__ = ["Runtime", "reraise_if_cancelled"]

logger = logging.getLogger("fastapi_taskflow")


def reraise_if_cancelled() -> None:
    """Raise ``CancelledError`` if the current task was asked to stop.

    Call it in an ``except Exception`` block of a loop that retries: a driver that turns a
    cancellation into an ordinary error (some do, while tearing a connection down) would
    otherwise make the loop outlive its cancellation and hang shutdown.
    """
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python >= 3.11
    if cancelling is not None and cancelling():
        raise asyncio.CancelledError


class Runtime:
    """Tasks and timers of the engine on one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        """Build it on ``loop``'s own thread (the engine does, on the running loop)."""
        self.loop = loop
        self.thread = threading.get_ident()
        """The thread ``loop`` runs on."""
        self.stopping = False
        self.background: set[asyncio.Task[Any]] = set()
        self.running: dict[str, asyncio.Task[Any]] = {}
        self.workers: dict[str, Any] = {}

    def is_current(self) -> bool:
        """True when called on this runtime's loop: what ``asyncio.get_running_loop() is
        self.loop`` says, without the system call Python 3.11 makes for it (``getpid``,
        to notice a fork) — asked once or twice per request. A thread runs one loop at
        a time, so this loop running, on this thread, is the running loop."""
        return self.thread == threading.get_ident() and self.loop.is_running()

    @property
    def usable(self) -> bool:
        """True while the loop can still run work for this runtime."""
        return not self.loop.is_closed() and not self.stopping

    def spawn(
        self, coro: Coroutine[Any, Any, Any], *, name: str | None = None
    ) -> asyncio.Task[Any]:
        """Start ``coro`` as a task this runtime keeps a reference to until it ends."""
        task = self.loop.create_task(coro, name=name)
        self.adopt(task)
        return task

    def adopt(self, task: asyncio.Task[Any]) -> None:
        """Keep a reference to ``task`` until it ends (and cancel it at shutdown)."""
        self.background.add(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("taskflow engine task failed", exc_info=task.exception())
