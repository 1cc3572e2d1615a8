"""``GET {path}/api/events``: server-sent events carrying what changed, never the list.

Each message is one event of one task, from every instance (``task_manager.events()``
relays what other instances publish through the backend's ``subscribe()``)::

    event: lifecycle
    data: {"task_id": "...", "status": "running", ...}

A comment line goes out every ``keepalive`` seconds so proxies keep the connection open.

A stream ends by itself after ``STREAM_MAX_SECONDS`` and as soon as uvicorn (running
this process) begins a graceful shutdown: an open dashboard would otherwise hold the
server's "waiting for connections to close" step, and with it the task manager's own
graceful shutdown, forever. Browsers reconnect on their own (``retry:``) and the
dashboard reloads its list after a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from typing import Final

from ..events import LifecycleEvent, LogEvent
from ..manager import TaskManager
from .schemas import lifecycle_message, log_message

__all__ = [
    "KEEPALIVE_SECONDS",
    "STREAM_MAX_SECONDS",
    "encode_dropped",
    "encode_event",
    "event_stream",
]

KEEPALIVE_SECONDS: Final = 15.0
"""Seconds between keep-alive comments on an idle stream."""

STREAM_MAX_SECONDS: Final = 600.0
"""A stream ends after this long; the client reconnects (bounds any server's shutdown)."""

_TICK: Final = 1.0

_BACKLOG: Final = 10_000


def encode_event(event: LifecycleEvent | LogEvent) -> bytes:
    """One SSE message: ``event:`` the kind, ``data:`` the changed fields as JSON."""
    if isinstance(event, LifecycleEvent):
        kind, data = "lifecycle", lifecycle_message(event).model_dump_json()
    else:
        # ``progress`` only on a progress report: other log lines keep their shape
        message = log_message(event)
        omit = {"progress"} if message.progress is None else None
        kind, data = "log", message.model_dump_json(exclude=omit)
    # model_dump_json never emits a raw newline (JSON escapes them), so one data line.
    return f"event: {kind}\ndata: {data}\n\n".encode()


def encode_dropped(count: int) -> bytes:
    """The SSE message telling a client that ``count`` events were dropped for it:
    ``event: dropped`` (``EventSource`` hands named events to JavaScript, comments not)."""
    return f'event: dropped\ndata: {{"dropped": {count}}}\n\n'.encode()


def server_exiting() -> bool:
    """True once the uvicorn server of this process started shutting down.

    uvicorn installs its ``Server.handle_exit`` as the SIGINT/SIGTERM handler and sets
    ``should_exit`` on shutdown, before it waits for open connections; nothing in ASGI
    tells a streaming response about it. Any other server: False (the stream's maximum
    lifetime bounds the wait instead).
    """
    handler = signal.getsignal(signal.SIGTERM)
    server = getattr(handler, "__self__", None)
    return getattr(server, "should_exit", False) is True


async def event_stream(
    task_manager: TaskManager,
    *,
    keepalive: float = KEEPALIVE_SECONDS,
    max_seconds: float = STREAM_MAX_SECONDS,
) -> AsyncIterator[bytes]:
    """Yield SSE bytes until the client goes away (Starlette then cancels the generator).

    A slow client that falls ``_BACKLOG`` events behind loses the oldest ones rather than
    growing memory without bound; it is told with an ``event: dropped`` message (data
    ``{"dropped": N}``) and should reload what it shows (the dashboard does).
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
            yield b"retry: 2000\n: connected\n\n"
            started = last_sent = last_check = time.monotonic()
            while True:
                try:
                    event: LifecycleEvent | LogEvent | None = await asyncio.wait_for(
                        inbox.get(), min(keepalive, _TICK)
                    )
                except asyncio.TimeoutError:
                    event = None
                now = time.monotonic()
                if now - last_check >= _TICK:
                    last_check = now
                    if server_exiting() or now - started >= max_seconds:
                        return
                if event is None:
                    if now - last_sent >= keepalive:
                        last_sent = now
                        yield b": keep-alive\n\n"
                    continue
                last_sent = now
                if dropped:
                    yield encode_dropped(dropped)
                    dropped = 0
                yield encode_event(event)
        finally:
            pumping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pumping
