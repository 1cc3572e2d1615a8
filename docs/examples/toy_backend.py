"""A toy taskflow backend: every task in a few dicts behind one lock.

It keeps nothing across restarts, so it is no use in production, but it implements the
whole ``TaskBackend`` contract and passes the conformance suite, which makes it a short
map of what a real backend has to do. Each method's comment names the SQL or Redis idea
a real backend would use for the same guarantee.

Register it for ``toy://`` URLs in your package's ``pyproject.toml``::

    [project.entry-points."taskflow.backends"]
    toy = "toy_backend:from_url"
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import Counter
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from fastapi_taskflow.clock import Clock
from fastapi_taskflow.errors import BackendURLError, IdempotencyKeyHeldError
from fastapi_taskflow.events import LifecycleEvent, LogEvent
from fastapi_taskflow.key_taking import check_take_key, keyless_error
from fastapi_taskflow.models import (
    ACTIVE_STATUSES,
    APPLIED,
    DURATION_STATUSES,
    KEY_RELEASING_STATUSES,
    TERMINAL_STATUSES,
    Applied,
    Claim,
    CreateResult,
    DurationStats,
    LogEntry,
    TaskPage,
    TaskQuery,
    TaskRecord,
    TaskStats,
    TaskStatus,
    TaskUpdate,
    ThroughputBucket,
    Transition,
    bucket_start,
    decode_cursor,
    duration_stats,
    encode_cursor,
    matches_text,
)

Event = LifecycleEvent | LogEvent


# --8<-- [start:state]
@dataclass
class ToyState:
    """Everything a backend and its forks share. One lock makes each method atomic."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    logs: dict[str, list[LogEntry]] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # idempotency key -> task id
    # queue name -> task id -> (priority, due, enqueue sequence)
    queues: dict[str, dict[str, tuple[int, datetime, int]]] = field(default_factory=dict)
    sequence: itertools.count[int] = field(default_factory=itertools.count)
    heartbeats: dict[str, datetime] = field(default_factory=dict)  # instance id -> last beat
    locks: dict[str, tuple[str, datetime]] = field(default_factory=dict)  # name -> owner, expiry
    run_keys: set[str] = field(default_factory=set)
    readers: dict[str, datetime] = field(default_factory=dict)  # reader id -> expiry
    subscribers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[Event]]] = field(
        default_factory=list
    )


# --8<-- [end:state]


# --8<-- [start:class]
class ToyBackend:
    """A complete, in-process ``TaskBackend``.

    Args:
        clock: where "now" comes from; the suite passes a clock it can advance.
        state: shared state, given only by :meth:`fork`.
    """

    durable = False  # tasks die with the process

    def __init__(self, *, clock: Clock, state: ToyState | None = None) -> None:
        self.clock = clock
        self._state = state or ToyState()

    # --8<-- [end:class]

    # -- lifecycle -------------------------------------------------------------------
    # --8<-- [start:lifecycle]

    async def open(self) -> None:
        """Nothing to connect to. (A real backend connects and creates its schema.)"""

    async def close(self) -> None:
        """Nothing to release. (A real backend closes only its own pool.)"""

    def fork(self) -> ToyBackend:
        """Another backend over the same state, for another thread's event loop."""
        return ToyBackend(clock=self.clock, state=self._state)

    # --8<-- [end:lifecycle]

    # -- Store: creating and reading -------------------------------------------------
    # --8<-- [start:create]

    async def create(self, record: TaskRecord) -> CreateResult:
        """Insert unless the id exists or an active task holds the key."""
        with self._state.lock:
            return self._create(record)

    async def create_many(self, records: Sequence[TaskRecord]) -> list[CreateResult]:
        """Create each record in order; later records see the earlier ones."""
        with self._state.lock:
            return [self._create(record) for record in records]

    def _create(self, record: TaskRecord) -> CreateResult:
        # SQL: a primary key on task_id plus a unique index on the key of tasks that
        # hold it; Redis: HSETNX / SET NX inside one script.
        state = self._state
        if record.task_id in state.tasks:
            return CreateResult(record=_copy(state.tasks[record.task_id]), created=False)
        key = record.idempotency_key
        if key is not None and key in state.keys:
            return CreateResult(record=_copy(state.tasks[state.keys[key]]), created=False)
        stored = record.model_copy(update={"logs": []}, deep=True)
        state.tasks[record.task_id] = stored
        if key is not None and record.status not in KEY_RELEASING_STATUSES:
            state.keys[key] = record.task_id
        return CreateResult(record=_copy(stored), created=True)

    async def get(self, task_id: str) -> TaskRecord | None:
        """The record with its logs, or None."""
        with self._state.lock:
            record = self._state.tasks.get(task_id)
            if record is None:
                return None
            logs = list(self._state.logs.get(task_id, []))
            return record.model_copy(update={"logs": logs}, deep=True)

    async def find_by_key(self, idempotency_key: str) -> TaskRecord | None:
        """The task holding the key, or None."""
        with self._state.lock:
            task_id = self._state.keys.get(idempotency_key)
            return None if task_id is None else _copy(self._state.tasks[task_id])

    # --8<-- [end:create]

    # -- Store: changing -------------------------------------------------------------
    # --8<-- [start:change]

    async def transition(
        self,
        task_id: str,
        *,
        expected: Collection[TaskStatus],
        new: TaskStatus,
        update: TaskUpdate | None = None,
        take_key: bool = False,
    ) -> TaskRecord | None:
        """Compare-and-set. SQL: ``UPDATE ... WHERE task_id = ? AND status IN (...)``.

        ``take_key=True`` (an operator retry of a FAILED task) also makes the task hold
        its idempotency key again, unless another task holds it now. SQL: ``SET
        active_key = ...`` in the same UPDATE (the unique index refuses a taken key);
        Redis: check and set the key's holder inside the same script.
        """
        if take_key:
            check_take_key(new)
        with self._state.lock:
            record = self._state.tasks.get(task_id)
            if record is None or record.status not in expected:
                return None
            key = record.idempotency_key
            if take_key:
                if key is None:
                    raise keyless_error(task_id)
                holder = self._state.keys.get(key)
                if holder is not None and holder != task_id:
                    raise IdempotencyKeyHeldError(task_id, record.status.value, holder)
            written = self._write(record, new, update)
            if take_key and key is not None:
                self._state.keys[key] = task_id
            return written

    async def transition_many(
        self, transitions: Sequence[Transition]
    ) -> list[TaskRecord | Applied | None]:
        """Many compare-and-sets in one go: the engine's group commit.

        SQL: one transaction (or one ``UPDATE ... FROM (VALUES ...)``); Redis: one
        script call over all the ids. Each item gets what ``transition`` would return,
        or ``APPLIED`` when it asked for no record back (``read_back=False``: skip
        reading and decoding the row).
        """
        results: list[TaskRecord | Applied | None] = []
        with self._state.lock:
            for item in transitions:
                record = self._state.tasks.get(item.task_id)
                if record is None or record.status not in item.expected:
                    results.append(None)
                else:
                    written = self._write(record, item.new, item.update)
                    results.append(written if item.read_back else APPLIED)
        return results

    async def write_many(
        self, creates: Sequence[TaskRecord], transitions: Sequence[Transition]
    ) -> tuple[list[CreateResult], list[TaskRecord | Applied | None]]:
        """The whole group commit: new records, then status changes, in one write.

        SQL: both in one transaction (one commit instead of two); Redis: both scripts in
        one pipeline (one round trip). Here, the two calls one after the other.
        """
        return await self.create_many(creates), await self.transition_many(transitions)

    async def update(self, task_id: str, update: TaskUpdate) -> TaskRecord | None:
        """Write the set fields; the status stays."""
        with self._state.lock:
            record = self._state.tasks.get(task_id)
            return None if record is None else self._write(record, record.status, update)

    def _write(
        self, record: TaskRecord, status: TaskStatus, update: TaskUpdate | None
    ) -> TaskRecord:
        changes = update.changes() if update is not None else {}
        changes.update(status=status, updated_at=self.clock.now())
        new = record.model_copy(update=changes, deep=True)
        self._state.tasks[record.task_id] = new
        key = record.idempotency_key
        releases = status in KEY_RELEASING_STATUSES
        if key is not None and releases and self._state.keys.get(key) == record.task_id:
            del self._state.keys[key]  # a failed task frees its key
        return _copy(new)

    async def append_logs(self, task_id: str, entries: Sequence[LogEntry]) -> None:
        """Append in order; an unknown task is ignored."""
        with self._state.lock:
            if task_id in self._state.tasks:
                self._state.logs.setdefault(task_id, []).extend(entries)

    # --8<-- [end:change]

    # -- Store: owners ---------------------------------------------------------------
    # --8<-- [start:owners]

    async def owners(self) -> set[str]:
        """Owners of active tasks. (SQL: ``SELECT DISTINCT owner ... WHERE status IN``.)"""
        with self._state.lock:
            return {
                r.owner
                for r in self._state.tasks.values()
                if r.owner is not None and r.status in ACTIVE_STATUSES
            }

    async def owned(self, owner: str, *, limit: int = 100) -> list[str]:
        """The owner's active tasks, oldest first. (SQL: an index on ``owner, status``.)"""
        with self._state.lock:
            found = [
                r
                for r in self._state.tasks.values()
                if r.owner == owner and r.status in ACTIVE_STATUSES
            ]
        found.sort(key=lambda r: r.created_at)
        return [r.task_id for r in found[:limit]]

    async def adopt(self, task_id: str, *, owner: str, new_owner: str | None) -> TaskRecord | None:
        """Compare-and-set the owner. (SQL: ``UPDATE ... WHERE owner = ? AND status IN``.)"""
        with self._state.lock:
            record = self._state.tasks.get(task_id)
            if record is None or record.owner != owner or record.status not in ACTIVE_STATUSES:
                return None
            adopted = record.model_copy(update={"owner": new_owner})  # updated_at stays
            self._state.tasks[task_id] = adopted
            return _copy(adopted)

    # --8<-- [end:owners]

    # -- Store: listing, counting, purging -------------------------------------------
    # --8<-- [start:query]

    async def query(self, query: TaskQuery) -> TaskPage:
        """Newest first, keyset-paginated on ``(created_at, task_id)``."""
        after = decode_cursor(query.cursor) if query.cursor else None  # ValueError if bad
        with self._state.lock:
            matches = [r for r in self._state.tasks.values() if _matches(r, query, after)]
        matches.sort(key=lambda r: (r.created_at, r.task_id), reverse=True)
        page = [_copy(record) for record in matches[: query.limit]]
        more = len(matches) > query.limit
        cursor = encode_cursor(page[-1].created_at, page[-1].task_id) if more else None
        return TaskPage(items=page, next_cursor=cursor)

    async def stats(self) -> TaskStats:
        """Counts by status and function. (SQL: ``GROUP BY func_name, status``.)"""
        with self._state.lock:
            pairs = Counter((r.func_name, r.status) for r in self._state.tasks.values())
        by_status: Counter[TaskStatus] = Counter()
        by_func: dict[str, dict[TaskStatus, int]] = {}
        for (func, status), count in pairs.items():
            by_status[status] += count
            by_func.setdefault(func, {})[status] = count
        return TaskStats(total=sum(pairs.values()), by_status=dict(by_status), by_func=by_func)

    # --8<-- [end:query]
    # --8<-- [start:insights]

    async def durations(
        self, *, func_names: Collection[str] | None = None
    ) -> dict[str, DurationStats]:
        """Nearest-rank p50/p95/p99 of ``finished_at - started_at`` per function.

        (SQL: ``percentile_disc(...) WITHIN GROUP (ORDER BY duration)``, or
        ``ORDER BY duration LIMIT 1 OFFSET nearest_rank(n, p)``; Redis: a sorted set of
        recent durations per function, read by rank.)
        """
        found: dict[str, list[float]] = {}
        with self._state.lock:
            for r in self._state.tasks.values():
                if r.status not in DURATION_STATUSES or r.started_at is None:
                    continue
                if r.finished_at is None or (
                    func_names is not None and r.func_name not in func_names
                ):
                    continue
                seconds = (r.finished_at - r.started_at).total_seconds()
                found.setdefault(r.func_name, []).append(seconds)
        return {name: duration_stats(values) for name, values in found.items()}

    async def throughput(
        self, *, since: datetime, until: datetime, bucket_seconds: int
    ) -> list[ThroughputBucket]:
        """SUCCESS/FAILED tasks per finished-at bucket. (SQL: ``GROUP BY`` the bucket.)"""
        counts: Counter[tuple[datetime, TaskStatus]] = Counter()
        with self._state.lock:
            for r in self._state.tasks.values():
                finished = r.finished_at
                if r.status in DURATION_STATUSES and finished and since <= finished < until:
                    counts[bucket_start(finished, bucket_seconds), r.status] += 1
        starts = sorted({start for start, _ in counts})
        return [
            ThroughputBucket(
                bucket_start=start,
                succeeded=counts[start, TaskStatus.SUCCESS],
                failed=counts[start, TaskStatus.FAILED],
            )
            for start in starts
        ]

    # --8<-- [end:insights]
    # --8<-- [start:purge]

    async def purge(self, *, finished_before: datetime, batch_size: int = 1000) -> int:
        """Delete up to ``batch_size`` old finished tasks, with their logs and keys."""
        with self._state.lock:
            doomed = [
                r
                for r in self._state.tasks.values()
                if r.status in TERMINAL_STATUSES
                and r.finished_at is not None
                and r.finished_at < finished_before
            ][:batch_size]
            for record in doomed:
                del self._state.tasks[record.task_id]
                self._state.logs.pop(record.task_id, None)
                key = record.idempotency_key
                if key is not None and self._state.keys.get(key) == record.task_id:
                    del self._state.keys[key]
        return len(doomed)

    # --8<-- [end:purge]

    # -- Backend: queues -------------------------------------------------------------
    # --8<-- [start:queues]

    async def enqueue(
        self, task_id: str, *, queue: str, priority: int = 0, not_before: datetime | None = None
    ) -> None:
        """Upsert the task's entry on ``queue``."""
        with self._state.lock:
            self._enqueue(task_id, queue, priority, not_before)

    def _enqueue(
        self, task_id: str, queue: str, priority: int, not_before: datetime | None
    ) -> None:
        due = not_before or self.clock.now()
        entries = self._state.queues.setdefault(queue, {})
        entries[task_id] = (priority, due, next(self._state.sequence))

    async def claim(self, *, queue: str, owner: str, limit: int = 1) -> list[Claim]:
        """Take the best due tasks and hand their records to ``owner``, in one step.

        (SQL: ``FOR UPDATE SKIP LOCKED`` plus an ``UPDATE`` of the owner in the same
        transaction; Redis: one script.)
        """
        now = self.clock.now()
        with self._state.lock:
            entries = self._state.queues.get(queue, {})
            due = [(p, d, s, task_id) for task_id, (p, d, s) in entries.items() if d <= now]
            due.sort(key=lambda e: (-e[0], e[1], e[2]))
            claims = []
            for priority, _, _, task_id in due[:limit]:
                del entries[task_id]
                record = self._state.tasks.get(task_id)
                if record is not None and record.status is TaskStatus.PENDING:
                    self._state.tasks[task_id] = record.model_copy(update={"owner": owner})
                claims.append(Claim(task_id=task_id, queue=queue, priority=priority))
            return claims

    async def dequeue(self, task_id: str, *, queue: str) -> bool:
        """Remove a waiting task."""
        with self._state.lock:
            return self._state.queues.get(queue, {}).pop(task_id, None) is not None

    async def queue_length(self, queue: str) -> int:
        """Waiting tasks, due or not."""
        with self._state.lock:
            return len(self._state.queues.get(queue, {}))

    # --8<-- [end:queues]

    # -- Backend: heartbeats ---------------------------------------------------------
    # --8<-- [start:heartbeats]

    async def beat(self, instance_id: str) -> None:
        """The instance is alive now. (SQL: an upsert; Redis: ``HSET`` with the time.)"""
        now = self.clock.now()  # the injected clock, never the server's
        with self._state.lock:
            self._state.heartbeats[instance_id] = now

    async def heartbeats(self) -> dict[str, datetime]:
        """Every instance's last beat."""
        with self._state.lock:
            return dict(self._state.heartbeats)

    async def forget_instance(self, instance_id: str) -> None:
        """Drop the instance's heartbeat, if any."""
        with self._state.lock:
            self._state.heartbeats.pop(instance_id, None)

    # --8<-- [end:heartbeats]

    # -- Backend: locks and schedules ------------------------------------------------
    # --8<-- [start:locks]

    async def acquire_lock(self, name: str, *, owner: str, ttl_seconds: float) -> bool:
        """Take or extend the named lock (Redis: SET NX PX, or a script for re-entry)."""
        now = self.clock.now()
        with self._state.lock:
            current = self._state.locks.get(name)
            if current is not None and current[0] != owner and current[1] > now:
                return False
            self._state.locks[name] = (owner, now + timedelta(seconds=ttl_seconds))
            return True

    async def release_lock(self, name: str, *, owner: str) -> bool:
        """Release the lock if ``owner`` holds it."""
        with self._state.lock:
            current = self._state.locks.get(name)
            if current is None or current[0] != owner:
                return False
            del self._state.locks[name]
            return True

    async def schedule_once(
        self, run_key: str, *, task_id: str, queue: str, run_at: datetime, priority: int = 0
    ) -> bool:
        """Enqueue once per run key, ever (SQL: insert the key and the entry together)."""
        with self._state.lock:
            if run_key in self._state.run_keys:
                return False
            self._state.run_keys.add(run_key)
            self._enqueue(task_id, queue, priority, run_at)
            return True

    # --8<-- [end:locks]

    # -- Backend: events -------------------------------------------------------------
    # --8<-- [start:events]

    async def publish(self, event: Event) -> None:
        """Hand the event to every subscriber, on whatever loop it listens."""
        with self._state.lock:
            subscribers = list(self._state.subscribers)
        for loop, inbox in subscribers:
            if not loop.is_closed():
                loop.call_soon_threadsafe(inbox.put_nowait, event)

    async def publish_many(self, events: Sequence[Event]) -> None:
        """Hand each event to every subscriber, in order."""
        for event in events:
            await self.publish(event)

    @asynccontextmanager
    async def subscribe(
        self, *, skip_instance: str | None = None
    ) -> AsyncIterator[AsyncIterator[Event]]:
        """Listen from now on; leaving the ``async with`` stops listening."""
        inbox: asyncio.Queue[Event] = asyncio.Queue()
        subscriber = (asyncio.get_running_loop(), inbox)
        with self._state.lock:
            self._state.subscribers.append(subscriber)

        async def events() -> AsyncIterator[Event]:
            while True:
                event = await inbox.get()
                if skip_instance is None or event.instance_id != skip_instance:
                    yield event

        try:
            yield events()
        finally:
            with self._state.lock:
                self._state.subscribers.remove(subscriber)

    async def announce_reader(self, reader_id: str, *, ttl_seconds: float) -> None:
        """Record (or extend) a reader of the published events."""
        with self._state.lock:
            self._state.readers[reader_id] = self.clock.now() + timedelta(seconds=ttl_seconds)

    async def withdraw_reader(self, reader_id: str) -> None:
        """Forget a reader."""
        with self._state.lock:
            self._state.readers.pop(reader_id, None)

    async def readers(self) -> set[str]:
        """The readers whose announcement has not expired."""
        now = self.clock.now()
        with self._state.lock:
            return {r for r, expires in self._state.readers.items() if expires > now}

    # --8<-- [end:events]


def _copy(record: TaskRecord) -> TaskRecord:
    """A private copy, so a caller editing a returned record cannot edit the store."""
    return record.model_copy(deep=True)


# --8<-- [start:matches]
def _matches(record: TaskRecord, query: TaskQuery, after: tuple[datetime, str] | None) -> bool:
    """Whether ``record`` passes every filter of ``query`` and lies after the cursor."""
    tags = query.tags or {}
    return (
        (not query.statuses or record.status in query.statuses)
        and (query.func_name is None or record.func_name == query.func_name)
        and (query.queue is None or record.queue == query.queue)
        and all(record.tags.get(name) == value for name, value in tags.items())
        and (query.created_after is None or record.created_at >= query.created_after)
        and (query.created_before is None or record.created_at < query.created_before)
        and (after is None or (record.created_at, record.task_id) < after)
        and matches_text(record, query.q)
    )


# --8<-- [end:matches]


# --8<-- [start:factory]
def from_url(url: str, *, clock: Clock) -> ToyBackend:
    """The entry point: a fresh, unopened backend for ``toy://``."""
    if url.rstrip("/") != "toy:":
        raise BackendURLError(f"malformed toy backend URL {url!r}: use exactly 'toy://'")
    return ToyBackend(clock=clock)


# --8<-- [end:factory]
