"""``GET {path}/api/events``: server-sent events carrying what changed, never the list.

Each message is one event of one task, from every instance (``task_manager.events()``
relays what other instances publish through the backend's ``subscribe()``)::

    event: lifecycle
    data: {"task_id": "...", "status": "running", ...}

A comment line goes out every ``keepalive`` seconds so proxies keep the connection open.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Final

from ..events import LifecycleEvent, LogEvent
from ..manager import TaskManager
from .schemas import lifecycle_message, log_message

__all__ = ["KEEPALIVE_SECONDS", "encode_event", "event_stream"]

KEEPALIVE_SECONDS: Final = 15.0
"""Seconds between keep-alive comments on an idle stream."""

_BACKLOG: Final = 10_000


def encode_event(event: LifecycleEvent | LogEvent) -> bytes:
    """One SSE message: ``event:`` the kind, ``data:`` the changed fields as JSON."""
    if isinstance(event, LifecycleEvent):
        kind, data = "lifecycle", lifecycle_message(event).model_dump_json()
    else:
        kind, data = "log", log_message(event).model_dump_json()
    # model_dump_json never emits a raw newline (JSON escapes them), so one data line.
    return f"event: {kind}\ndata: {data}\n\n".encode()


async def event_stream(
    task_manager: TaskManager, *, keepalive: float = KEEPALIVE_SECONDS
) -> AsyncIterator[bytes]:
    """Yield SSE bytes until the client goes away (Starlette then cancels the generator).

    A slow client that falls ``_BACKLOG`` events behind loses the oldest ones rather than
    growing memory without bound; it is told with a ``: dropped N`` comment and can
    reload the list.
    """
    await task_manager.startup()
    inbox: asyncio.Queue[LifecycleEvent | LogEvent] = asyncio.Queue(_BACKLOG)
    dropped = 0

    async def pump(events: AsyncIterator[LifecycleEvent | LogEvent]) -> None:
        nonlocal dropped
        async for event in events:
            if inbox.full():
                inbox.get_nowait()
                dropped += 1
            inbox.put_nowait(event)

    async with task_manager.events() as events:
        pumping = asyncio.create_task(pump(events))
        try:
            yield b"retry: 3000\n: connected\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(inbox.get(), keepalive)
                except asyncio.TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if dropped:
                    yield f": dropped {dropped}\n\n".encode()
                    dropped = 0
                yield encode_event(event)
        finally:
            pumping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pumping
