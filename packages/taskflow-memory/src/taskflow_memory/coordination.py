"""In-process queues, heartbeats, locks, schedules and events: the Backend half."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import os
import threading
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

from fastapi_taskflow.clock import Clock
from fastapi_taskflow.events import LifecycleEvent, LogEvent
from fastapi_taskflow.models import Claim, construct

__all__ = ["CoordinationState", "MemoryCoordination"]

Event = LifecycleEvent | LogEvent


class _Entry:
    """A queued task; the heap orders entries by ``sort_key`` only."""

    __slots__ = ("live", "priority", "sort_key", "task_id")

    def __init__(self, sort_key: tuple[int, datetime, int], task_id: str, priority: int) -> None:
        self.sort_key = sort_key
        self.task_id = task_id
        self.priority = priority
        self.live = True

    def __lt__(self, other: _Entry) -> bool:
        return self.sort_key < other.sort_key


class _Queue:
    """A priority queue with ``not_before``: a heap of entries, stale ones skipped."""

    def __init__(self) -> None:
        self.heap: list[_Entry] = []
        self.entries: dict[str, _Entry] = {}

    def push(self, entry: _Entry) -> None:
        old = self.entries.pop(entry.task_id, None)
        if old is not None:
            old.live = False
        self.entries[entry.task_id] = entry
        heapq.heappush(self.heap, entry)

    def remove(self, task_id: str) -> bool:
        entry = self.entries.pop(task_id, None)
        if entry is None:
            return False
        entry.live = False
        return True

    def pop_due(self, now: datetime, limit: int) -> list[_Entry]:
        """Pop up to ``limit`` due entries, best first.

        The heap orders by (priority, due, seq); entries that are not due yet are set
        aside and pushed back, so a delayed high-priority task never blocks a due one.
        """
        taken: list[_Entry] = []
        not_due: list[_Entry] = []
        while self.heap and len(taken) < limit:
            entry = heapq.heappop(self.heap)
            if not entry.live:
                continue
            if entry.sort_key[1] > now:
                not_due.append(entry)
                continue
            del self.entries[entry.task_id]
            taken.append(entry)
        for entry in not_due:
            heapq.heappush(self.heap, entry)
        return taken


class CoordinationState:
    """Shared state of every fork of one memory backend."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        """A forked child gets a lock of its own (see ``_forked_child``)."""
        _states.add(self)
        self.queues: dict[str, _Queue] = {}
        self.seq = itertools.count()
        self.heartbeats: dict[str, datetime] = {}
        """Last heartbeat per instance id."""
        self.locks: dict[str, tuple[str, datetime]] = {}
        self.readers: dict[str, datetime] = {}
        """When each announced reader's announcement expires, by reader id."""
        self.run_keys: set[str] = set()
        self.subscribers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[Event]]] = []


_states: weakref.WeakSet[CoordinationState] = weakref.WeakSet()


def _forked_child() -> None:
    """In a forked child: fresh locks (a thread of the parent may have held one at the
    fork), and none of the parent's event subscribers (their loops run there)."""
    for state in list(_states):
        state.lock = threading.Lock()
        state.subscribers = []


os.register_at_fork(after_in_child=_forked_child)


class MemoryCoordination:
    """The Backend protocol over :class:`CoordinationState`."""

    clock: Clock
    _coord: CoordinationState

    async def enqueue(
        self,
        task_id: str,
        *,
        queue: str,
        priority: int = 0,
        not_before: datetime | None = None,
    ) -> None:
        """See :meth:`fastapi_taskflow.protocols.Backend.enqueue`."""
        with self._coord.lock:
            self._enqueue_locked(task_id, queue, priority, not_before)

    def _enqueue_locked(
        self, task_id: str, queue: str, priority: int, not_before: datetime | None
    ) -> None:
        due = not_before or self.clock.now()
        entry = _Entry((-priority, due, next(self._coord.seq)), task_id, priority)
        self._coord.queues.setdefault(queue, _Queue()).push(entry)

    async def claim(self, *, queue: str, owner: str, limit: int = 1) -> list[Claim]:
        """See :meth:`fastapi_taskflow.protocols.Backend.claim`.

        The records are handed to ``owner`` while the queue lock is held, so no one sees
        a claimed task whose record still names its previous owner.
        """
        now = self.clock.now()
        with self._coord.lock:
            pending = self._coord.queues.get(queue)
            if pending is None:
                return []
            taken = pending.pop_due(now, limit)
            if not taken:
                return []
            self._hand_over([entry.task_id for entry in taken], owner)
            # values of the right types already: no validation per claim
            return [
                construct(Claim, task_id=entry.task_id, queue=queue, priority=entry.priority)
                for entry in taken
            ]

    def _hand_over(self, task_ids: Sequence[str], owner: str) -> None:
        """Make ``owner`` the owner of those of ``task_ids`` whose record is active.

        The memory backend's store provides it (:class:`~taskflow_memory.MemoryBackend`
        combines both halves); called with the coordination lock held.
        """
        raise NotImplementedError("MemoryCoordination needs a store: use MemoryBackend")

    async def dequeue(self, task_id: str, *, queue: str) -> bool:
        """See :meth:`fastapi_taskflow.protocols.Backend.dequeue`."""
        with self._coord.lock:
            pending = self._coord.queues.get(queue)
            return pending is not None and pending.remove(task_id)

    async def queue_length(self, queue: str) -> int:
        """See :meth:`fastapi_taskflow.protocols.Backend.queue_length`."""
        with self._coord.lock:
            pending = self._coord.queues.get(queue)
            return 0 if pending is None else len(pending.entries)

    async def beat(self, instance_id: str) -> None:
        """See :meth:`fastapi_taskflow.protocols.Backend.beat`."""
        now = self.clock.now()
        with self._coord.lock:
            self._coord.heartbeats[instance_id] = now

    async def heartbeats(self) -> dict[str, datetime]:
        """See :meth:`fastapi_taskflow.protocols.Backend.heartbeats`."""
        with self._coord.lock:
            return dict(self._coord.heartbeats)

    async def forget_instance(self, instance_id: str) -> None:
        """See :meth:`fastapi_taskflow.protocols.Backend.forget_instance`."""
        with self._coord.lock:
            self._coord.heartbeats.pop(instance_id, None)

    async def acquire_lock(self, name: str, *, owner: str, ttl_seconds: float) -> bool:
        """See :meth:`fastapi_taskflow.protocols.Backend.acquire_lock`."""
        now = self.clock.now()
        with self._coord.lock:
            current = self._coord.locks.get(name)
            if current is not None and current[0] != owner and current[1] > now:
                return False
            self._coord.locks[name] = (owner, now + timedelta(seconds=ttl_seconds))
            return True

    async def release_lock(self, name: str, *, owner: str) -> bool:
        """See :meth:`fastapi_taskflow.protocols.Backend.release_lock`."""
        with self._coord.lock:
            current = self._coord.locks.get(name)
            if current is None or current[0] != owner:
                return False
            del self._coord.locks[name]
            return True

    async def announce_reader(self, reader_id: str, *, ttl_seconds: float) -> None:
        """See :meth:`fastapi_taskflow.protocols.Backend.announce_reader`."""
        expires = self.clock.now() + timedelta(seconds=ttl_seconds)
        with self._coord.lock:
            self._coord.readers[reader_id] = expires

    async def withdraw_reader(self, reader_id: str) -> None:
        """See :meth:`fastapi_taskflow.protocols.Backend.withdraw_reader`."""
        with self._coord.lock:
            self._coord.readers.pop(reader_id, None)

    async def readers(self) -> set[str]:
        """See :meth:`fastapi_taskflow.protocols.Backend.readers`; expired announcements
        are dropped on the way."""
        now = self.clock.now()
        with self._coord.lock:
            readers = self._coord.readers
            for gone in [r for r, expires in readers.items() if expires <= now]:
                del readers[gone]
            return set(readers)

    async def schedule_once(
        self,
        run_key: str,
        *,
        task_id: str,
        queue: str,
        run_at: datetime,
        priority: int = 0,
    ) -> bool:
        """See :meth:`fastapi_taskflow.protocols.Backend.schedule_once`."""
        with self._coord.lock:
            if run_key in self._coord.run_keys:
                return False
            self._coord.run_keys.add(run_key)
            self._enqueue_locked(task_id, queue, priority, run_at)
            return True

    async def publish(self, event: Event) -> None:
        """See :meth:`fastapi_taskflow.protocols.Backend.publish`."""
        with self._coord.lock:
            subscribers = list(self._coord.subscribers)
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for loop, inbox in subscribers:
            if loop is current:
                inbox.put_nowait(event)
            elif not loop.is_closed():
                loop.call_soon_threadsafe(inbox.put_nowait, event)

    async def publish_many(self, events: Sequence[Event]) -> None:
        """See :meth:`fastapi_taskflow.protocols.Backend.publish_many`."""
        for event in events:
            await self.publish(event)

    @asynccontextmanager
    async def subscribe(
        self, *, skip_instance: str | None = None
    ) -> AsyncIterator[AsyncIterator[Event]]:
        """See :meth:`fastapi_taskflow.protocols.Backend.subscribe`."""
        inbox: asyncio.Queue[Event] = asyncio.Queue()
        subscriber = (asyncio.get_running_loop(), inbox)
        with self._coord.lock:
            self._coord.subscribers.append(subscriber)

        async def events() -> AsyncIterator[Event]:
            while True:
                event = await inbox.get()
                if skip_instance is None or event.instance_id != skip_instance:
                    yield event

        try:
            yield events()
        finally:
            with self._coord.lock:
                self._coord.subscribers.remove(subscriber)
