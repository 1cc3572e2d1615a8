"""``taskflow watch``: a live view fed by the store's event fan-out (``subscribe()``).

Events of every instance arrive as they are published; the counts and the recent-task
list are re-read from the store every ``refresh`` seconds while events keep coming.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..events import LifecycleEvent, LogEvent
from ..fanout import announced_reader
from ..models import TaskQuery, TaskRecord, TaskStats, TaskStatus
from ..protocols import TaskBackend
from .render import status_text, tasks_table, when
from .shapes import event_json, task_summary

if TYPE_CHECKING:
    from .app import Output

__all__ = ["watch"]

Event = LifecycleEvent | LogEvent


class View:
    """What the live view shows: counts, recent tasks, recent events."""

    def __init__(self, recent: int, width: int | None = None) -> None:
        self.width = width
        self.stats = TaskStats()
        self.tasks: list[TaskRecord] = []
        self.events: deque[Event] = deque(maxlen=recent)
        self.seen = 0

    async def reload(self, store: TaskBackend, recent: int) -> None:
        """Re-read the counts and the newest tasks from the store."""
        self.stats = await store.stats()
        self.tasks = (await store.query(TaskQuery(limit=recent))).items

    def snapshot(self) -> dict[str, Any]:
        """The first line of ``watch --json``."""
        counts = self.stats.model_dump(mode="json")
        return {
            "type": "snapshot",
            "total": counts["total"],
            "by_status": counts["by_status"],
            "recent": [task_summary(r) for r in self.tasks],
        }

    def render(self) -> RenderableType:
        """Counts, newest tasks and the last events."""
        counts = Table(title=f"{self.stats.total} tasks", header_style="bold")
        for status in TaskStatus:
            counts.add_column(status_text(status), justify="right")
        counts.add_row(*(str(self.stats.by_status.get(s, 0)) for s in TaskStatus))
        newest = tasks_table(self.tasks, title="newest tasks", width=self.width, compact=True)
        parts: list[RenderableType] = [counts, newest]
        events = Table(title=f"events ({self.seen} received)", header_style="bold")
        events.add_column("TIME (UTC)", no_wrap=True)
        events.add_column("TASK", no_wrap=True)
        events.add_column("FUNCTION", overflow="fold")
        events.add_column("WHAT", no_wrap=True)
        events.add_column("DETAIL", overflow="ellipsis", no_wrap=True, max_width=50)
        events.add_column("INSTANCE", overflow="ellipsis", no_wrap=True, max_width=30)
        for event in reversed(self.events):
            if isinstance(event, LifecycleEvent):
                what = status_text(event.status)
                detail = Text(event.error or "", style="red")
            else:
                what = Text(f"log {event.level}")
                detail = Text(event.message)
            events.add_row(
                when(event.timestamp),
                Text(event.task_id),
                Text(event.func_name),
                what,
                detail,
                Text(event.instance_id or ""),
            )
        parts.append(events)
        return Group(*parts)


async def watch(
    store: TaskBackend,
    *,
    output: Output,
    once: bool,
    duration: float | None,
    recent: int,
    refresh: float,
) -> None:
    """Run the live view until ``duration`` passes (forever when None)."""
    view = View(recent, output.out.width)
    if once:
        await view.reload(store, recent)
        if output.json:
            output.data(view.snapshot())
        else:
            output.out.print(view.render())
        return
    deadline = None if duration is None else time.monotonic() + duration
    async with announced_reader(store), store.subscribe() as events:
        inbox: asyncio.Queue[Event] = asyncio.Queue()

        async def pump() -> None:
            async for event in events:
                inbox.put_nowait(event)

        reader = asyncio.ensure_future(pump())
        try:
            # Subscribed first, then read: no event between the two is missed.
            await view.reload(store, recent)
            if output.json:
                output.data(view.snapshot())
                await _stream_json(output, inbox, reader, deadline)
            else:
                await _live(output, store, view, inbox, reader, deadline, recent, refresh)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader


def _left(deadline: float | None, cap: float) -> float:
    if deadline is None:
        return cap
    return max(0.0, min(cap, deadline - time.monotonic()))


async def _next(
    inbox: asyncio.Queue[Event], reader: asyncio.Future[None], timeout: float
) -> Event | None:
    """The next event within ``timeout`` seconds, or None."""
    if not inbox.empty():
        return inbox.get_nowait()
    getter: asyncio.Future[Any] = asyncio.ensure_future(inbox.get())
    waiting: set[asyncio.Future[Any]] = {getter, reader}
    done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if getter in done:
        event: Event = getter.result()
        return event
    getter.cancel()
    if reader in done:
        reader.result()  # the subscription failed: raise its error
        raise ConnectionError("the event subscription ended")
    return None


async def _stream_json(
    output: Output,
    inbox: asyncio.Queue[Event],
    reader: asyncio.Future[None],
    deadline: float | None,
) -> None:
    while deadline is None or time.monotonic() < deadline:
        event = await _next(inbox, reader, _left(deadline, 1.0))
        if event is not None:
            output.data(event_json(event))


async def _live(
    output: Output,
    store: TaskBackend,
    view: View,
    inbox: asyncio.Queue[Event],
    reader: asyncio.Future[None],
    deadline: float | None,
    recent: int,
    refresh: float,
) -> None:
    stale = False
    next_reload = time.monotonic() + refresh
    with Live(view.render(), console=output.out, auto_refresh=False) as live:
        while deadline is None or time.monotonic() < deadline:
            wait = max(0.0, next_reload - time.monotonic())
            event = await _next(inbox, reader, _left(deadline, wait))
            if event is not None:
                view.events.append(event)
                view.seen += 1
                stale = stale or isinstance(event, LifecycleEvent)
                live.update(view.render(), refresh=True)
            if time.monotonic() >= next_reload:
                next_reload = time.monotonic() + refresh
                if stale:
                    stale = False
                    await view.reload(store, recent)
                    live.update(view.render(), refresh=True)
        if stale:
            await view.reload(store, recent)
        live.update(view.render(), refresh=True)
