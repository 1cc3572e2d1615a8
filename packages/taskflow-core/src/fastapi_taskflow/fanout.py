"""Events from every instance: local delivery, publication and the remote listener.

Observers receive the events of tasks run by this instance. On a durable backend each
event is also published, and every instance listens: remote events reach the observers
that ask for them (``remote_events = True``) and every ``task_manager.events()`` stream,
so a dashboard on any instance is live for the whole fleet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from .events import LifecycleEvent, LogEvent
from .runtime import reraise_if_cancelled

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["EventHub"]

logger = logging.getLogger("fastapi_taskflow")

Event = LifecycleEvent | LogEvent


class EventHub:
    """Delivers events to observers and to ``events()`` streams; publishes and listens."""

    def __init__(self, engine: Engine, *, publish: bool) -> None:
        self.engine = engine
        self.publish = publish
        self._streams: set[asyncio.Queue[Event]] = set()

    @property
    def has_streams(self) -> bool:
        """True while at least one ``events()`` stream is open."""
        return bool(self._streams)

    async def emit(self, event: Event) -> None:
        """Deliver an event of this instance; publish it for the others."""
        engine = self.engine
        if engine.observers.observers:
            await engine.observers.emit(event)
        for stream in list(self._streams):
            stream.put_nowait(event)
        if self.publish:
            try:
                await engine.backend.publish(event)
            except Exception:
                reraise_if_cancelled()
                logger.debug("publishing a task event failed", exc_info=True)

    async def listen(self) -> None:
        """Relay events published by other instances; runs until cancelled."""
        engine = self.engine
        while True:
            try:
                async with engine.backend.subscribe() as events:
                    async for event in events:
                        reraise_if_cancelled()
                        if event.instance_id == engine.instance_id:
                            continue
                        await engine.observers.emit_remote(event)
                        for stream in list(self._streams):
                            stream.put_nowait(event)
            except asyncio.CancelledError:
                raise
            except Exception:
                reraise_if_cancelled()
                logger.debug("event subscription dropped; reconnecting", exc_info=True)
                await asyncio.sleep(1.0)

    @asynccontextmanager
    async def stream(self) -> AsyncIterator[AsyncIterator[Event]]:
        """Open a stream of every instance's events (from now on)."""
        inbox: asyncio.Queue[Event] = asyncio.Queue()
        self._streams.add(inbox)

        async def events() -> AsyncIterator[Event]:
            while True:
                yield await inbox.get()

        try:
            yield events()
        finally:
            self._streams.discard(inbox)
