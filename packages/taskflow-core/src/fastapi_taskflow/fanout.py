"""Events from every instance: local delivery, publication and the remote listener.

Observers receive the events of tasks run by this instance. On a durable backend each
event is also published, and every instance listens: remote events reach the observers
that ask for them (``remote_events = True``) and every ``task_manager.events()`` stream,
so a dashboard on any instance is live for the whole fleet.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from .events import LifecycleEvent, LogEvent
from .runtime import reraise_if_cancelled

if TYPE_CHECKING:
    from .observers import ObserverChain
    from .protocols import TaskBackend

__all__ = ["EventHub"]

logger = logging.getLogger("fastapi_taskflow")

Event = LifecycleEvent | LogEvent

STREAM_BACKLOG = 10_000
"""How many events an ``events()`` stream holds for a reader that falls behind; past
that the oldest are dropped (and a warning says so), so a stuck reader cannot grow
the process's memory without bound."""


class EventHub:
    """Delivers events to observers and to ``events()`` streams; publishes and listens."""

    def __init__(
        self,
        observers: ObserverChain,
        instance_id: Callable[[], str],
        backend: Callable[[], TaskBackend],
        *,
        publish: bool,
    ) -> None:
        self.observers = observers
        self._instance_id = instance_id
        self._backend = backend
        self._publish = publish
        self._streams: set[_Inbox] = set()
        self.listening = False
        """True when someone receives events: observers, other instances or a stream.
        Events are built only then. An attribute, not a property: it is read once per
        attempt of every task, and refreshed when an observer is added or a stream
        opens or closes (``publish`` is fixed at construction)."""
        observers.on_change = self._refresh
        self._refresh()

    @property
    def instance_id(self) -> str:
        """The name of the instance whose events this hub sends (the engine's)."""
        return self._instance_id()

    @property
    def publish(self) -> bool:
        """Events are published for the other instances (a shared backend)."""
        return self._publish

    def _refresh(self) -> None:
        self.listening = bool(self.observers.observers or self._publish or self._streams)

    @property
    def has_streams(self) -> bool:
        """True while at least one ``events()`` stream is open."""
        return bool(self._streams)

    async def emit(self, event: Event) -> None:
        """Deliver an event of this instance; publish it for the others."""
        if self.observers.observers:
            await self.observers.emit(event)
        for stream in list(self._streams):
            stream.put(event)
        if self._publish:
            try:
                await self._backend().publish(event)
            except Exception:
                reraise_if_cancelled()
                logger.debug("publishing a task event failed", exc_info=True)

    async def listen(self) -> None:
        """Relay events published by other instances; runs until cancelled."""
        while True:
            try:
                async with self._backend().subscribe() as events:
                    async for event in events:
                        reraise_if_cancelled()
                        if event.instance_id == self._instance_id():
                            continue
                        await self.observers.emit_remote(event)
                        for stream in list(self._streams):
                            stream.put(event)
            except asyncio.CancelledError:
                raise
            except Exception:
                reraise_if_cancelled()
                logger.debug("event subscription dropped; reconnecting", exc_info=True)
                await asyncio.sleep(1.0)

    @asynccontextmanager
    async def stream(self, backlog: int = STREAM_BACKLOG) -> AsyncIterator[AsyncIterator[Event]]:
        """Open a stream of every instance's events (from now on), holding at most
        ``backlog`` unread ones (the oldest are dropped past that)."""
        inbox = _Inbox(backlog)
        self._streams.add(inbox)
        self._refresh()
        try:
            yield inbox.events()
        finally:
            self._streams.discard(inbox)
            self._refresh()
            if inbox.dropped:
                logger.warning(
                    "an events() stream dropped %d events its reader was too slow for",
                    inbox.dropped,
                )


class _Inbox:
    """The events waiting for one stream.

    Waits on an ``asyncio.Event`` rather than ``asyncio.Queue.get``: a stream left
    suspended when its loop closes (a test client's loop, say) is then closed quietly,
    where ``Queue.get`` would try to schedule a callback on the closed loop.
    """

    def __init__(self, backlog: int) -> None:
        self._items: deque[Event] = deque(maxlen=backlog)
        self._ready = asyncio.Event()
        self.dropped = 0
        """Events dropped, unread, because ``backlog`` were waiting."""

    def put(self, event: Event) -> None:
        """Add an event (on the loop the stream is read on); past the backlog the
        oldest unread one is dropped."""
        items = self._items
        if len(items) == items.maxlen:
            self.dropped += 1
            if self.dropped == 1:  # once; the stream's end tells how many in all
                logger.warning(
                    "an events() stream's reader is %d events behind: the oldest are "
                    "dropped from now on; read the stream promptly, or pass a larger "
                    "events(backlog=...)",
                    len(items),
                )
        items.append(event)
        self._ready.set()

    async def events(self) -> AsyncIterator[Event]:
        """Yield events as they arrive, forever."""
        items, ready = self._items, self._ready
        while True:
            while items:
                yield items.popleft()
            ready.clear()
            await ready.wait()
