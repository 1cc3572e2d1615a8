"""Events from every instance: local delivery, publication and the remote listener.

Observers receive the events of tasks run by this instance. On a durable backend every
instance listens to the others, and publishes its own tasks' events while someone
reads them: remote events reach the observers that ask for them (``remote_events =
True``) and every ``task_manager.events()`` stream, so a dashboard on any instance is
live for the whole fleet.

Who reads is in the store: an instance with an open ``events()`` stream or a
``remote_events`` observer announces itself as a reader (``Backend.announce_reader``,
renewed while it reads), as ``taskflow watch`` does (:func:`announced_reader`), and
every instance reads the list of readers every :data:`READERS_CHECK_INTERVAL`. While no
other reader is announced, nothing is built or published for the tasks of an instance
nobody watches: publication would otherwise cost a busy instance half its throughput
on SQLite. A reader gets the other instances' events from at most about that interval
after it is announced. The engine's own signals between instances (a cancel request, a
task started or cancelled by an instance other than the one that accepted it) are
published whether or not anyone reads (:meth:`EventHub.emit` with ``signal=True``).

Publication is off the tasks' path: an event goes to an outbox, and one asyncio task
per event loop publishes what the outbox holds with one ``publish_many`` (one write),
the next batch gathering while a write is on its way. A task does not wait for its
events to reach the store (publication is best effort either way), and a task that
logs a line in a loop costs the store one write per batch, not one per line.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING

from .events import LifecycleEvent, LogEvent
from .runtime import reraise_if_cancelled, within

if TYPE_CHECKING:
    from .observers import ObserverChain
    from .protocols import Backend, TaskBackend

__all__ = ["READERS_CHECK_INTERVAL", "READER_TTL", "EventHub", "announced_reader"]

logger = logging.getLogger("fastapi_taskflow")

Event = LifecycleEvent | LogEvent

PUBLISH_BACKLOG = 100_000
"""How many events wait for publication at most; past that the oldest are dropped, and a
warning says so. A task that logs in a loop without awaiting anything fills the outbox
before its sender runs (a line per row of an import), so the bound is far above what a
turn of the loop makes in ordinary use; a store that is down loses the batches it
refuses (publication is best effort), so an outage does not fill it."""

PUBLISH_INTERVAL = 0.05
"""Seconds between two publication writes of one event loop at least: the events of
that time go in one write. Other instances see an event at most this much later; the
store (SQLite's single writer above all, which the tasks' own writes wait for) takes
at most 20 publication writes a second from an instance however busy it is."""

READERS_CHECK_INTERVAL = 0.5
"""Seconds between two reads of the store's readers (``Backend.readers``) by an
instance: a reader announced now gets every instance's events at most about this
much later, and an instance stops publishing about this long after the last reader
withdrew."""

READER_TTL = 15.0
"""Seconds a reader's announcement lasts; a reader renews it every third of that. A
reader that dies without withdrawing keeps the instances publishing this long."""

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
        self.publish = publish
        """Events are published for the other instances (a shared backend); fixed. An
        attribute: each task's attempt reads it."""
        self._streams: set[_Inbox] = set()
        self._reading_streams = 0
        """Open streams of users (``events()``), not the engine's own watchers."""
        self._outbox: _Outbox | None = None
        self._others_read = False
        """Some reader other than this instance is announced in the store."""
        self._announced = False
        """This instance is announced as a reader (and should withdraw at its end)."""
        self._renewed_at = 0.0
        """When (loop time) this instance last announced itself."""
        self._wake: Callable[[], None] | None = None
        """Wakes the readers watch (:meth:`watch_readers`) when this instance starts or
        stops reading, so its announcement changes at once."""
        self.listening = False
        """True when someone receives events: observers, a stream here, or a reader
        elsewhere. Events are built only then. An attribute, not a property: it is
        read once per attempt of every task, and refreshed when an observer is added,
        a stream opens or closes, or the readers in the store change."""
        observers.on_change = self._refresh
        self._refresh()

    @property
    def instance_id(self) -> str:
        """The name of the instance whose events this hub sends (the engine's)."""
        return self._instance_id()

    def _refresh(self) -> None:
        self.listening = bool(
            self.observers.observers
            or self._reading_streams
            or (self.publish and self._others_read)
        )
        if self._wake is not None and self.reads_others != self._announced:
            self._wake()

    @property
    def reads_others(self) -> bool:
        """True when this instance wants the other instances' events: a stream is open
        here, or an observer asks for remote events (shared backends only)."""
        if not self.publish:
            return False
        return bool(self._reading_streams) or any(
            getattr(observer, "remote_events", False) for observer in self.observers.observers
        )

    async def emit(self, event: Event, *, signal: bool = False) -> None:
        """Deliver an event of this instance; publish it while others read.
        ``signal``: published whether or not anyone reads (see the module's text)."""
        if self.observers.observers:
            await self.observers.emit(event)
        self.deliver(event, signal=signal)

    def deliver(self, event: Event, *, signal: bool = False) -> None:
        """What :meth:`emit` does after the observers (which are awaited), on the hub's
        loop: the event goes to the ``events()`` streams and the outbox, in order with
        the events before it, and nothing waits. Called alone when there is no
        observer (a ``task_log()`` line: no task per line)."""
        for stream in list(self._streams):
            stream.put(event)
        if self.publish and (self._others_read or signal):
            self._to_publish(event)

    def _to_publish(self, event: Event) -> None:
        """Put ``event`` in the running loop's outbox; start its sender if it rests."""
        loop = asyncio.get_running_loop()
        outbox = self._outbox
        if outbox is None or outbox.loop is not loop:  # a new loop (a test client's)
            outbox = self._outbox = _Outbox(loop)
        outbox.put(event)
        if outbox.sender is None:
            outbox.sender = loop.create_task(self._send(outbox), name="taskflow-publish")

    async def _send(self, outbox: _Outbox) -> None:
        """Publish what ``outbox`` holds, one batch per write (at most one write every
        :data:`PUBLISH_INTERVAL`), until it is empty."""
        loop = outbox.loop
        try:
            while outbox.events:
                wait = outbox.sent_at + PUBLISH_INTERVAL - loop.time()
                if wait > 0 and not outbox.draining:
                    await asyncio.sleep(wait)
                outbox.sent_at = loop.time()
                batch = outbox.take()
                try:
                    await self._backend().publish_many(batch)
                except Exception:
                    reraise_if_cancelled()
                    logger.debug("publishing %d task events failed", len(batch), exc_info=True)
        finally:
            outbox.sender = None

    async def drain(self, timeout: float) -> None:
        """Publish the events still waiting on this loop (at most ``timeout`` seconds):
        what a shutdown, or a loop's end, does before it closes the store."""
        outbox = self._outbox
        if outbox is None or outbox.loop is not asyncio.get_running_loop():
            return
        outbox.draining = True  # no more waiting between writes
        sender = outbox.sender
        if sender is None and outbox.events:  # its sender was cancelled (a loop's end)
            sender = outbox.sender = asyncio.create_task(self._send(outbox))
        if sender is not None:
            _, late = await asyncio.wait([sender], timeout=timeout)
            for task in late:
                task.cancel()
        outbox.draining = False  # a resumed engine paces its writes again

    async def check_readers(self) -> None:
        """Read the readers in the store once (announcing, renewing or withdrawing this
        instance first, as it reads or not); a failure is logged and changes nothing.
        The engine calls it as it starts, so an instance that starts while a reader is
        announced publishes from its first task, then :meth:`watch_readers` does."""
        loop = asyncio.get_running_loop()
        me = self._instance_id()
        try:
            backend = self._backend()
            if self.reads_others:
                if not self._announced or loop.time() - self._renewed_at >= READER_TTL / 3:
                    await backend.announce_reader(me, ttl_seconds=READER_TTL)
                    self._announced, self._renewed_at = True, loop.time()
            elif self._announced:
                self._announced = False
                await backend.withdraw_reader(me)
            others = bool(await backend.readers() - {me})
            if others != self._others_read:
                self._others_read = others
                self._refresh()
        except Exception:
            reraise_if_cancelled()
            logger.debug("reading the readers of events failed", exc_info=True)
        # A driver may swallow a cancellation and answer (redis-py as a loop closes):
        # stop here, not at the next cancellation, which never comes.
        reraise_if_cancelled()

    async def watch_readers(self) -> None:
        """:meth:`check_readers` every :data:`READERS_CHECK_INTERVAL`, and at once when
        this instance starts or stops reading; runs until cancelled (a shared backend
        only)."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def wake_up() -> None:
            loop.call_soon_threadsafe(wake.set)

        self._wake = wake_up
        try:
            while True:
                # Not asyncio.wait_for: on 3.11 it can swallow a cancellation that
                # comes as the wait ends (a loop closing as its last stream closes).
                timer = loop.call_later(READERS_CHECK_INTERVAL, wake.set)
                try:
                    await wake.wait()
                finally:
                    timer.cancel()
                wake.clear()
                await self.check_readers()
        finally:
            self._wake = None

    async def withdraw(self, timeout: float) -> None:
        """Withdraw this instance's announcement as a reader, if it made one (at most
        ``timeout`` seconds; best effort): what a shutdown does."""
        if not self._announced:
            return
        self._announced = False
        try:
            await within(timeout, self._backend().withdraw_reader(self._instance_id()))
        except Exception:
            reraise_if_cancelled()
            logger.debug("withdrawing this instance as a reader failed", exc_info=True)

    async def listen(self) -> None:
        """Relay events published by other instances; runs until cancelled."""
        while True:
            try:
                me = self._instance_id()
                async with self._backend().subscribe(skip_instance=me) as events:
                    # A driver may swallow a cancellation that came while it subscribed
                    # (redis-py waiting for the confirmation): stop now, not never.
                    reraise_if_cancelled()
                    async for event in events:
                        reraise_if_cancelled()
                        if event.instance_id == me:  # a backend may deliver them
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
    async def stream(
        self,
        backlog: int = STREAM_BACKLOG,
        *,
        only: Callable[[Event], bool] | None = None,
        watcher: bool = False,
    ) -> AsyncIterator[AsyncIterator[Event]]:
        """Open a stream of every instance's events (from now on), holding at most
        ``backlog`` unread ones (the oldest are dropped past that); with ``only``, of
        the events it accepts (the rest never reach the stream). ``watcher``: one of
        the engine's own watchers, which look for a few signals among the events that
        happen to flow: it does not make anyone build or publish events. Any other
        stream on a shared backend announces this instance as a reader before it is
        entered (when no other stream here had)."""
        inbox = _Inbox(backlog, only)
        self._streams.add(inbox)
        counted = not watcher
        if counted:
            self._reading_streams += 1
            self._refresh()
        try:
            if counted and self.reads_others and not self._announced:
                # Announced once this is entered: an instance that starts or reads
                # the readers from now on publishes for this stream.
                await self.check_readers()
            yield inbox.events()
        finally:
            self._streams.discard(inbox)
            if counted:
                self._reading_streams -= 1
                self._refresh()
            if inbox.dropped:
                logger.warning(
                    "an events() stream dropped %d events its reader was too slow for",
                    inbox.dropped,
                )


@asynccontextmanager
async def announced_reader(backend: Backend, reader_id: str | None = None) -> AsyncIterator[str]:
    """Announce a reader of ``backend``'s events for as long as the block runs
    (renewed every third of :data:`READER_TTL`), then withdraw it: what a process
    that reads ``backend.subscribe()`` without a task manager (``taskflow watch``)
    does, so the instances publish their tasks' events. Yields the reader's id.

    Raises:
        BackendUnavailableError: the first announcement failed (the store is down).
    """
    reader = reader_id or f"reader-{uuid.uuid4().hex[:12]}"
    await backend.announce_reader(reader, ttl_seconds=READER_TTL)

    async def renew() -> None:
        while True:
            await asyncio.sleep(READER_TTL / 3)
            try:
                await backend.announce_reader(reader, ttl_seconds=READER_TTL)
            except Exception:
                reraise_if_cancelled()
                logger.debug("renewing a reader's announcement failed", exc_info=True)

    renewing = asyncio.create_task(renew(), name="taskflow-reader")
    try:
        yield reader
    finally:
        renewing.cancel()
        with suppress(asyncio.CancelledError):
            await renewing
        try:
            await backend.withdraw_reader(reader)
        except Exception:
            reraise_if_cancelled()
            logger.debug("withdrawing a reader failed", exc_info=True)


class _Outbox:
    """This instance's events waiting for publication, on the loop that emitted them."""

    __slots__ = ("draining", "dropped", "events", "loop", "sender", "sent_at")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sent_at = -PUBLISH_INTERVAL
        """When (loop time) the last write was sent: the first goes at once."""
        self.draining = False
        """A shutdown or a loop's end waits for the rest: sent without pause."""
        self.events: deque[Event] = deque(maxlen=PUBLISH_BACKLOG)
        self.sender: asyncio.Task[None] | None = None
        """The task publishing them, while there are any."""
        self.dropped = 0

    def put(self, event: Event) -> None:
        """Add an event; past the backlog the oldest waiting one is dropped."""
        events = self.events
        if len(events) == events.maxlen:
            self.dropped += 1
            if self.dropped == 1:
                logger.warning(
                    "task events are published slower than they happen (%d waiting): "
                    "the oldest are dropped from now on; other instances' dashboards "
                    "and streams miss them (the store's records are complete)",
                    len(events),
                )
        events.append(event)

    def take(self) -> list[Event]:
        """Every waiting event, in order; the outbox is left empty."""
        batch = list(self.events)
        self.events.clear()
        return batch


class _Inbox:
    """The events waiting for one stream.

    Waits on an ``asyncio.Event`` rather than ``asyncio.Queue.get``: a stream left
    suspended when its loop closes (a test client's loop, say) is then closed quietly,
    where ``Queue.get`` would try to schedule a callback on the closed loop.
    """

    def __init__(self, backlog: int, only: Callable[[Event], bool] | None = None) -> None:
        self._items: deque[Event] = deque(maxlen=backlog)
        self._only = only
        self._ready = asyncio.Event()
        self.dropped = 0
        """Events dropped, unread, because ``backlog`` were waiting."""

    def put(self, event: Event) -> None:
        """Add an event (on the loop the stream is read on) unless the stream does not
        take it; past the backlog the oldest unread one is dropped."""
        if self._only is not None and not self._only(event):
            return
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
