"""``taskflow logs ID --follow``: a task's log lines as it writes them.

Subscribes to the store's events first, then prints the lines already stored, then every
new line of the task, until a lifecycle event (or, when no event comes for a second, the
stored record) says the task finished; then the lines
stored with the finished task that no event brought (a running attempt's lines are stored
when it ends, so lines it wrote before the follower started come last). A line seen both
in the stored record and as an event is printed once.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import TYPE_CHECKING, Final

from rich.text import Text

from ..events import LifecycleEvent, LogEvent
from ..fanout import announced_reader
from ..models import LogEntry, TaskRecord
from ..operations import get_task
from ..protocols import TaskBackend
from .render import status_text, when
from .shapes import log_json

if TYPE_CHECKING:
    from .app import Output

__all__ = ["RECHECK_SECONDS", "follow_logs"]

RECHECK_SECONDS: Final = 1.0
"""While no event comes, the follower reads the task's record this often: events are
best effort (and an instance publishes them from about half a second after a reader
is announced), so the record says when the task finished."""


def _key(timestamp: datetime, attempt: int, message: str) -> tuple[int, int, str]:
    """Identifies a line across the event and the stored copy (milliseconds: a store
    may keep less precision than the event carried)."""
    return int(timestamp.timestamp() * 1000), attempt, message


def _line(output: Output, entry: LogEntry, *, tracebacks: bool) -> None:
    if output.json:
        output.data(log_json(entry))
        return
    stamp = when(entry.timestamp) + f".{entry.timestamp.microsecond // 1000:03d}"
    text = Text(f"{stamp} {entry.level:<7} [{entry.attempt}] ")
    text.append(entry.message)
    trace = entry.extra.get("traceback") if tracebacks else None
    if isinstance(trace, str) and trace:
        text.append("\n" + trace.rstrip(), style="dim")
    output.out.print(text)


async def follow_logs(
    store: TaskBackend,
    task_id: str,
    output: Output,
    *,
    tail: int | None,
    tracebacks: bool,
) -> None:
    """Print ``task_id``'s lines (the last ``tail`` stored ones first), then new ones until
    the task finishes (or the user stops it).

    With ``--json`` each line is one Log object per output line (JSON lines).

    Raises:
        TaskNotFoundError: no task has this id.
    """
    async with announced_reader(store), store.subscribe() as events:
        record = await get_task(store, task_id)
        seen = {_key(e.timestamp, e.attempt, e.message) for e in record.logs}
        for entry in record.logs[-tail:] if tail else record.logs:
            _line(output, entry, tracebacks=tracebacks)
        if record.status.is_terminal:
            _finished(output, task_id, record.status.value)
            return
        # On stderr, so --json output stays JSON lines; subscribed by now.
        output.err.print(f"following task {task_id} ({record.status.value}); Ctrl-C stops")
        inbox: asyncio.Queue[LifecycleEvent | LogEvent] = asyncio.Queue()

        async def pump() -> None:
            async for event in events:
                if event.task_id == task_id:
                    inbox.put_nowait(event)

        pumping = asyncio.ensure_future(pump())
        try:
            while True:
                try:
                    event = await asyncio.wait_for(inbox.get(), RECHECK_SECONDS)
                except asyncio.TimeoutError:
                    final = await store.get(task_id)
                    if final is not None and final.status.is_terminal:
                        _rest(output, final, seen, tracebacks=tracebacks)
                        _finished(output, task_id, final.status.value)
                        return
                    continue
                if isinstance(event, LogEvent):
                    key = _key(event.timestamp, event.attempt, event.message)
                    if key in seen:
                        continue
                    seen.add(key)
                    entry = LogEntry(
                        timestamp=event.timestamp,
                        level=event.level,
                        message=event.message,
                        attempt=event.attempt,
                        extra=event.extra,
                    )
                    _line(output, entry, tracebacks=tracebacks)
                elif isinstance(event, LifecycleEvent) and event.status.is_terminal:
                    # Log events travel apart from lifecycle ones and may come later;
                    # the stored record has every line by now (stored before the status).
                    final = await store.get(task_id)
                    if final is not None:
                        _rest(output, final, seen, tracebacks=tracebacks)
                    _finished(output, task_id, event.status.value)
                    return
        finally:
            pumping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pumping


def _rest(
    output: Output, final: TaskRecord, seen: set[tuple[int, int, str]], *, tracebacks: bool
) -> None:
    """Print the stored lines of the finished task that no event brought."""
    for entry in final.logs:
        key = _key(entry.timestamp, entry.attempt, entry.message)
        if key not in seen:
            seen.add(key)
            _line(output, entry, tracebacks=tracebacks)


def _finished(output: Output, task_id: str, status: str) -> None:
    if not output.json:
        message = Text(f"task {task_id} finished: ")
        message.append_text(status_text(status))
        output.err.print(message)
