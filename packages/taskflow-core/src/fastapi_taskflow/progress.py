"""Progress reports of a running task: ``task_progress(fraction, message=None)``.

A report is stored on the task's record (``record.progress``) and announced as a
:class:`~fastapi_taskflow.events.LogEvent` whose ``extra`` carries ``progress`` (so a
dashboard or an ``events()`` stream shows it live). Reports are coalesced: however often
a task reports, its record is written (and an event sent) at most once per
``PROGRESS_INTERVAL`` seconds with the latest value, and once more when the attempt ends,
so the record always holds the last reported fraction. The message of a write is also
kept in the task's logs when it differs from the last one kept.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .context import ENTRIES_LOCK, TaskContext, get_task_context
from .errors import InvalidTaskError
from .events import LogEvent
from .models import LogEntry, TaskUpdate, log_line
from .runtime import reraise_if_cancelled

if TYPE_CHECKING:
    from .clock import Clock
    from .fanout import EventHub
    from .protocols import Store

__all__ = ["PROGRESS_INTERVAL", "ProgressReporter", "ProgressWiring", "task_progress"]

logger = logging.getLogger("fastapi_taskflow")

PROGRESS_INTERVAL = 0.5
"""Seconds between two progress writes of one task (reports in between are coalesced)."""

PROGRESS_FIELD = "progress"
"""The ``LogEvent.extra`` field that carries a progress fraction."""


def task_progress(fraction: float, message: str | None = None) -> None:
    """Report how far the running task is: ``task_progress(0.4, "40 of 100 rows")``.

    Cheap enough to call in a tight loop: writes are coalesced (see the module docs).
    Works in async and sync tasks; outside a task it does nothing.

    Args:
        fraction: how much is done, from 0.0 to 1.0.
        message: an optional human-readable status, shown with the progress.

    Raises:
        InvalidTaskError: ``fraction`` is not a number between 0 and 1.
    """
    ctx = get_task_context()
    if ctx is not None:
        report(ctx, fraction, message)


def report(ctx: TaskContext, fraction: float, message: str | None) -> None:
    """Validate a report and hand it to the task's reporter (engine use)."""
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float))
        or not 0.0 <= fraction <= 1.0
    ):
        raise InvalidTaskError(
            f"task_progress() needs a fraction between 0.0 and 1.0, got {fraction!r}; "
            "for 40 of 200 items pass 40 / 200"
        )
    if message is not None and not isinstance(message, str):
        raise InvalidTaskError(
            f"task_progress() message must be a string or None, got {type(message).__name__}"
        )
    reporter = ctx._reporter
    if reporter is None:
        wiring = ctx._wiring
        if wiring is None:
            return  # not the context of a running attempt
        with ENTRIES_LOCK:
            reporter = ctx._reporter
            if reporter is None:
                reporter = ctx._reporter = ProgressReporter(wiring, ctx, ctx._loop)
    reporter.report(float(fraction), message)


class ProgressReporter:
    """Coalesces one attempt's reports into at most one write per interval.

    ``report`` may be called from any thread (sync tasks run in the thread pool); the
    writes happen on the engine's loop.
    """

    def __init__(
        self,
        wiring: ProgressWiring,
        ctx: TaskContext,
        loop: asyncio.AbstractEventLoop,
        interval: float = PROGRESS_INTERVAL,
    ) -> None:
        self.wiring = wiring
        self.ctx = ctx
        self.interval = interval
        self.loop = loop
        self._lock = threading.Lock()
        self._latest: tuple[float, str | None] | None = None
        self._armed = False
        self._last_write = 0.0
        self._last_message: str | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._writing: asyncio.Task[None] | None = None
        self._closed = False

    def report(self, fraction: float, message: str | None) -> None:
        """Remember the latest report; make sure a write of it is on its way."""
        with self._lock:
            self._latest = (fraction, message)
            if self._armed:
                return
            self._armed = True
            delay = max(0.0, self._last_write + self.interval - time.monotonic())
        try:
            on_loop = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._arm(delay)
        else:
            self.loop.call_soon_threadsafe(self._arm, delay)

    def _arm(self, delay: float) -> None:
        if self._closed:
            return
        self._handle = self.loop.call_later(delay, self._start_write)

    def _start_write(self) -> None:
        self._handle = None
        self._writing = self.loop.create_task(self.write())

    async def write(self) -> None:
        """Write the latest report to the record and announce it; errors are logged."""
        with self._lock:
            latest, self._latest = self._latest, None
            self._armed = False
            self._last_write = time.monotonic()
        if latest is None:
            return
        fraction, message = latest
        wiring, ctx = self.wiring, self.ctx
        entry = LogEntry(
            timestamp=wiring.clock.now(),
            level="info",
            message=message if message is not None else f"progress {fraction:.0%}",
            attempt=ctx.attempt,
            extra={PROGRESS_FIELD: fraction},
        )
        if message is not None and message != self._last_message:
            self._last_message = message
            # stored with the task's logs at its next write
            ctx.add_line(
                log_line(entry.timestamp, entry.level, entry.message, entry.attempt, entry.extra)
            )
        try:
            await wiring.store().update(ctx.task_id, TaskUpdate(progress=fraction))
        except Exception:
            reraise_if_cancelled()
            logger.debug("writing the progress of task %s failed", ctx.task_id, exc_info=True)
        hub = wiring.hub
        if hub.listening:
            await hub.emit(
                LogEvent(
                    task_id=ctx.task_id,
                    func_name=ctx.func_name,
                    attempt=ctx.attempt,
                    tags=ctx.tags,
                    timestamp=entry.timestamp,
                    instance_id=hub.instance_id,
                    level=entry.level,
                    message=entry.message,
                    extra=entry.extra,
                )
            )

    async def close(self) -> None:
        """Write what is still unwritten (the attempt ended), once any write in flight
        is done."""
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._writing is not None and not self._writing.done():
            await asyncio.gather(self._writing, return_exceptions=True)
        if self._latest is not None:
            await self.write()


@dataclass(frozen=True, slots=True)
class ProgressWiring:
    """Where progress reports go: the event hub, the clock, and the store of the loop
    the attempt runs on."""

    hub: EventHub
    clock: Clock
    store: Callable[[], Store]


async def close(ctx: TaskContext) -> None:
    """Flush the reporter of an attempt that ended, if the task reported at all."""
    reporter = ctx._reporter
    if reporter is not None:
        await reporter.close()
