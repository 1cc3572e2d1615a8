"""In-process task records: the Store half of the memory backend."""

from __future__ import annotations

import os
import threading
import weakref
from collections import Counter, OrderedDict
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from fastapi_taskflow.clock import Clock
from fastapi_taskflow.errors import IdempotencyKeyHeldError
from fastapi_taskflow.key_taking import check_take_key, keyless_error
from fastapi_taskflow.models import (
    ACTIVE_STATUSES,
    APPLIED,
    DURATION_STATUSES,
    DURATION_WINDOW,
    EPOCH,
    KEY_RELEASING_STATUSES,
    TERMINAL_STATUSES,
    Applied,
    CreateResult,
    DurationStats,
    LiveRecord,
    LogEntry,
    LogLine,
    TaskPage,
    TaskQuery,
    TaskRecord,
    TaskStats,
    TaskStatus,
    TaskUpdate,
    ThroughputBucket,
    Transition,
    construct,
    decode_cursor,
    duration_stats,
    encode_cursor,
    log_entry,
    log_line,
)

from .listing import NEWEST_FIRST, CreationOrder, page_filter

__all__ = ["DEFAULT_MAX_RECORDS", "MemoryState", "MemoryStore"]

_PENDING = TaskStatus.PENDING
_RUNNING = TaskStatus.RUNNING
_SUCCESS = TaskStatus.SUCCESS
_FAILED = TaskStatus.FAILED

DEFAULT_MAX_RECORDS = 10_000
"""How many task records a memory backend keeps before it drops the oldest finished ones."""


class MemoryState:
    """The shared state behind every fork of one memory backend, guarded by one lock."""

    def __init__(self, max_records: int | None = DEFAULT_MAX_RECORDS) -> None:
        self.lock = threading.Lock()
        """Held by every read and write (a forked child gets a lock of its own: a
        thread of the parent may have held this one at the fork)."""
        _states.add(self)
        self.max_records = max_records
        self.records: dict[str, LiveRecord] = {}
        """Task id -> its record, kept as one slotted object changed in place; the
        ``Store`` methods hand out :meth:`LiveRecord.to_record` snapshots."""
        self.finished: OrderedDict[str, None] = OrderedDict()
        """Ids of finished tasks in the order they finished (oldest first). An
        ``OrderedDict``, not a dict: the cap takes its first key once per finished
        task, which a dict finds by scanning every slot its earlier first keys left
        empty until it next resizes (~1.7 µs per task at 10,000 kept); an
        ``OrderedDict`` keeps a link to it."""
        self.logs: dict[str, tuple[LogLine, ...]] = {}
        """Task id -> its log lines: a tuple of :data:`LogLine` tuples, replaced by a
        longer one on each append, so the garbage collector leaves it alone."""
        self.key_holders: dict[str, str] = {}
        self.func_counts: dict[str, dict[TaskStatus, int]] = {}
        """Function name -> tasks by status (every status a key, counts may be 0)."""
        self.order = CreationOrder()
        """How far ``records``' order strays from creation order (for task lists)."""


_states: weakref.WeakSet[MemoryState] = weakref.WeakSet()


def _fresh_locks_in_child() -> None:
    for state in list(_states):
        state.lock = threading.Lock()


os.register_at_fork(after_in_child=_fresh_locks_in_child)


class MemoryStore:
    """The Store protocol over :class:`MemoryState`; every method holds the lock."""

    clock: Clock
    _state: MemoryState

    async def create(self, record: TaskRecord) -> CreateResult:
        """See :meth:`fastapi_taskflow.protocols.Store.create`."""
        live = LiveRecord.from_record(record)
        with self._state.lock:
            return self._create_result(live, self._create_locked(live))

    def create_now(self, record: LiveRecord | TaskRecord) -> TaskRecord | None:
        """See :meth:`fastapi_taskflow.protocols.InProcessStore.create_now`: a
        ``LiveRecord`` is kept as it is (it is the engine's, handed over)."""
        live = record if isinstance(record, LiveRecord) else LiveRecord.from_record(record)
        lock = self._state.lock
        lock.acquire()  # not ``with``: see start_now
        try:
            holder = self._create_locked(live)
            return None if holder is None else holder.to_record()  # a snapshot under the lock
        finally:
            lock.release()

    async def create_many(self, records: Sequence[TaskRecord]) -> list[CreateResult]:
        """See :meth:`fastapi_taskflow.protocols.Store.create_many`."""
        lives = [LiveRecord.from_record(record) for record in records]
        with self._state.lock:
            return self._create_many_locked(lives)

    def _create_many_locked(self, lives: Sequence[LiveRecord]) -> list[CreateResult]:
        return [self._create_result(live, self._create_locked(live)) for live in lives]

    def _create_result(self, live: LiveRecord, holder: LiveRecord | None) -> CreateResult:
        if holder is None:
            return construct(CreateResult, record=live.to_record(), created=True)
        return construct(CreateResult, record=holder.to_record(), created=False)

    def _create_locked(self, record: LiveRecord) -> LiveRecord | None:
        """Keep ``record`` (the store's from now on); None when kept, else the kept
        record holding its id or its idempotency key."""
        state = self._state
        task_id = record.task_id
        records = state.records
        existing = records.get(task_id)
        if existing is not None:
            return existing
        key = record.idempotency_key
        status = record.status
        if key is not None:
            holder_id = state.key_holders.get(key)
            if holder_id is not None:
                return records[holder_id]
            if status not in KEY_RELEASING_STATUSES:
                state.key_holders[key] = task_id
        records[task_id] = record
        by_func = state.func_counts.get(record.func_name)
        if by_func is None:
            by_func = state.func_counts[record.func_name] = dict.fromkeys(TaskStatus, 0)
        by_func[status] += 1
        if status in TERMINAL_STATUSES:
            state.finished[task_id] = None
            self._trim_locked()
        return None

    def _trim_locked(self) -> None:
        """Drop the oldest finished tasks while more than ``max_records`` are kept.

        Active tasks are never dropped, so a store full of them may exceed the cap.
        """
        state = self._state
        cap = state.max_records
        if cap is None:
            return
        finished = state.finished
        while len(state.records) > cap and finished:
            task_id = next(iter(finished))
            record = state.records.get(task_id)
            if record is None or record.status not in TERMINAL_STATUSES:
                del finished[task_id]
            else:
                self._delete_locked(record)

    def _delete_locked(self, record: LiveRecord) -> None:
        state = self._state
        del state.records[record.task_id]
        state.finished.pop(record.task_id, None)
        state.logs.pop(record.task_id, None)
        self._count(record, -1)
        key = record.idempotency_key
        if key is not None and state.key_holders.get(key) == record.task_id:
            del state.key_holders[key]

    async def get(self, task_id: str) -> TaskRecord | None:
        """See :meth:`fastapi_taskflow.protocols.Store.get`."""
        with self._state.lock:
            record = self._state.records.get(task_id)
            if record is None:
                return None
            lines = self._state.logs.get(task_id, ())
            return record.to_record([log_entry(line) for line in lines])

    async def find_by_key(self, idempotency_key: str) -> TaskRecord | None:
        """See :meth:`fastapi_taskflow.protocols.Store.find_by_key`."""
        with self._state.lock:
            holder_id = self._state.key_holders.get(idempotency_key)
            if holder_id is None:
                return None
            return self._state.records[holder_id].to_record()

    async def transition(
        self,
        task_id: str,
        *,
        expected: Collection[TaskStatus],
        new: TaskStatus,
        update: TaskUpdate | None = None,
        take_key: bool = False,
    ) -> TaskRecord | None:
        """See :meth:`fastapi_taskflow.protocols.Store.transition` (``take_key``: the
        key's holder is checked and set under the same lock as the change)."""
        changes = update.changes() if update is not None else None
        if take_key:
            return self._transition_taking_key(task_id, expected, new, changes)
        return self._transition(task_id, expected, new, changes)

    def _transition_taking_key(
        self,
        task_id: str,
        expected: Collection[TaskStatus],
        new: TaskStatus,
        changes: Mapping[str, Any] | None,
    ) -> TaskRecord | None:
        check_take_key(new)
        state = self._state
        with state.lock:
            record = state.records.get(task_id)
            if record is None or record.status not in expected:
                return None
            key = record.idempotency_key
            if key is None:
                raise keyless_error(task_id)
            holder = state.key_holders.get(key)
            if holder is not None and holder != task_id:
                raise IdempotencyKeyHeldError(task_id, record.status.value, holder)
            written = self._write_locked(record, new, changes)
            state.key_holders[key] = task_id
            return written.to_record()

    def transition_now(
        self,
        task_id: str,
        *,
        expected: Collection[TaskStatus],
        new: TaskStatus,
        changes: Mapping[str, Any] | None = None,
        at: datetime | None = None,
    ) -> LiveRecord | None:
        """See :meth:`fastapi_taskflow.protocols.InProcessStore.transition_now`.

        For the engine only: it returns the kept record itself, changed in place (no
        copy per status change), so it shows the task's later changes too. Every other
        method hands out snapshots.
        """
        state = self._state
        with state.lock:
            record = state.records.get(task_id)
            if record is None:
                return None
            if record.status not in expected:
                return None
            return self._write_locked(record, new, changes, at)

    def start_now(
        self, task_id: str, *, attempt: int, started_at: datetime, owner: str | None
    ) -> LiveRecord | None:
        """See :meth:`fastapi_taskflow.protocols.InProcessStore.start_now` (the kept
        record itself, as ``transition_now`` returns it)."""
        state = self._state
        lock = state.lock
        # acquire/release rather than ``with``: a ``with`` block looks its lock's
        # ``__enter__`` and ``__exit__`` up as two new bound methods, ~85 ns more on
        # each of a task's three status changes (create, start, finish)
        lock.acquire()
        try:
            record = state.records.get(task_id)
            if record is None or record.status is not _PENDING:
                return None
            record.status = _RUNNING
            record.attempt = attempt
            record.started_at = started_at
            record.updated_at = started_at
            record.owner = owner
            record.error = None
            by_func = state.func_counts[record.func_name]
            by_func[_PENDING] -= 1
            by_func[_RUNNING] += 1
            return record
        finally:
            lock.release()

    def finish_now(
        self,
        task_id: str,
        *,
        status: TaskStatus,
        finished_at: datetime,
        result: Any = None,
        error: str | None = None,
    ) -> LiveRecord | None:
        """See :meth:`fastapi_taskflow.protocols.InProcessStore.finish_now` (the kept
        record itself, as ``transition_now`` returns it)."""
        state = self._state
        lock = state.lock
        lock.acquire()  # not ``with``: see start_now
        try:
            record = state.records.get(task_id)
            if record is None or record.status is not _RUNNING:
                return None
            record.status = status
            record.finished_at = finished_at
            record.updated_at = finished_at
            record.result = result
            record.error = error
            by_func = state.func_counts[record.func_name]
            by_func[_RUNNING] -= 1
            by_func[status] += 1
            self._status_moved_locked(record, status)
            return record
        finally:
            lock.release()

    def _transition(
        self,
        task_id: str,
        expected: Collection[TaskStatus],
        new: TaskStatus,
        changes: Mapping[str, Any] | None,
    ) -> TaskRecord | None:
        with self._state.lock:
            record = self._state.records.get(task_id)
            if record is None or record.status not in expected:
                return None
            return self._write_locked(record, new, changes).to_record()

    async def transition_many(
        self, transitions: Sequence[Transition]
    ) -> list[TaskRecord | Applied | None]:
        """See :meth:`fastapi_taskflow.protocols.Store.transition_many` (one lock hold;
        an item with ``read_back=False`` gets ``APPLIED``, no snapshot)."""
        with self._state.lock:
            return self._transition_many_locked(transitions)

    def _transition_many_locked(
        self, transitions: Sequence[Transition]
    ) -> list[TaskRecord | Applied | None]:
        results: list[TaskRecord | Applied | None] = []
        records = self._state.records
        for item in transitions:
            record = records.get(item.task_id)
            if record is None or record.status not in item.expected:
                results.append(None)
            else:
                changes = item.update.changes() if item.update is not None else None
                written = self._write_locked(record, item.new, changes)
                results.append(written.to_record() if item.read_back else APPLIED)
        return results

    async def write_many(
        self, creates: Sequence[TaskRecord], transitions: Sequence[Transition]
    ) -> tuple[list[CreateResult], list[TaskRecord | Applied | None]]:
        """See :meth:`fastapi_taskflow.protocols.Store.write_many` (one lock hold)."""
        lives = [LiveRecord.from_record(record) for record in creates]
        with self._state.lock:
            return self._create_many_locked(lives), self._transition_many_locked(transitions)

    async def owners(self) -> set[str]:
        """See :meth:`fastapi_taskflow.protocols.Store.owners`.

        Found by a scan of the kept records: only recovery and shutdown ask, and
        keeping an index per owner cost every status change two dict writes.
        """
        with self._state.lock:
            return {
                record.owner
                for record in self._state.records.values()
                if record.owner is not None and record.status in ACTIVE_STATUSES
            }

    async def owned(self, owner: str, *, limit: int = 100) -> list[str]:
        """See :meth:`fastapi_taskflow.protocols.Store.owned` (a scan, as ``owners``)."""
        with self._state.lock:
            found = [
                record
                for record in self._state.records.values()
                if record.owner == owner and record.status in ACTIVE_STATUSES
            ]
        found.sort(key=lambda record: record.created_at)
        return [record.task_id for record in found[:limit]]

    async def adopt(self, task_id: str, *, owner: str, new_owner: str | None) -> TaskRecord | None:
        """See :meth:`fastapi_taskflow.protocols.Store.adopt`."""
        with self._state.lock:
            record = self._state.records.get(task_id)
            if record is None or record.owner != owner or record.status not in ACTIVE_STATUSES:
                return None
            return self._set_owner_locked(record, new_owner).to_record()

    def _hand_over(self, task_ids: Sequence[str], owner: str) -> None:
        """Make ``owner`` the owner of the PENDING records among ``task_ids`` (for
        :meth:`MemoryCoordination.claim`; ``updated_at`` is left alone, as by adopt; a
        RUNNING record stays its runner's)."""
        with self._state.lock:
            records = self._state.records
            for task_id in task_ids:
                record = records.get(task_id)
                if record is not None and record.owner != owner and record.status is _PENDING:
                    self._set_owner_locked(record, owner)

    def _set_owner_locked(self, record: LiveRecord, owner: str | None) -> LiveRecord:
        """Give the kept ``record`` a new owner in place (None: released) and return
        it; the record must be active."""
        record.owner = owner
        return record

    async def update(self, task_id: str, update: TaskUpdate) -> TaskRecord | None:
        """See :meth:`fastapi_taskflow.protocols.Store.update`."""
        with self._state.lock:
            record = self._state.records.get(task_id)
            if record is None:
                return None
            return self._write_locked(record, record.status, update.changes()).to_record()

    def _write_locked(
        self,
        record: LiveRecord,
        status: TaskStatus,
        changes: Mapping[str, Any] | None,
        at: datetime | None = None,
    ) -> LiveRecord:
        """Apply a status change to the kept ``record`` in place and return it (the
        kept record itself: the ``Store`` methods hand out snapshots). ``at`` is the
        time of the change (``updated_at``); the store's clock tells it when None."""
        old_status = record.status
        if changes:
            for name, value in changes.items():
                setattr(record, name, value)
        record.status = status
        record.updated_at = self.clock.now() if at is None else at
        if status is not old_status:
            by_func = self._state.func_counts[record.func_name]
            by_func[old_status] -= 1
            by_func[status] += 1
            if status in TERMINAL_STATUSES or old_status in TERMINAL_STATUSES:
                self._status_moved_locked(record, status)
        return record

    def _status_moved_locked(self, record: LiveRecord, status: TaskStatus) -> None:
        """Keep the finished order, the idempotency keys and the cap true after
        ``record`` moved into or out of a terminal ``status`` (counts are the
        caller's)."""
        state = self._state
        task_id = record.task_id
        if status in TERMINAL_STATUSES:
            key = record.idempotency_key
            if (
                key is not None
                and status in KEY_RELEASING_STATUSES
                and state.key_holders.get(key) == task_id
            ):
                del state.key_holders[key]
            state.finished[task_id] = None
            cap = state.max_records
            if cap is not None and len(state.records) > cap:
                self._trim_locked()
        else:
            state.finished.pop(task_id, None)

    def _count(self, record: LiveRecord, delta: int) -> None:
        state = self._state
        by_func = state.func_counts.get(record.func_name)
        if by_func is None:
            by_func = state.func_counts[record.func_name] = dict.fromkeys(TaskStatus, 0)
        by_func[record.status] += delta

    def append_now(self, task_id: str, lines: Sequence[LogLine]) -> None:
        """See :meth:`fastapi_taskflow.protocols.InProcessStore.append_now` (the tuples
        are kept as they are)."""
        with self._state.lock:
            self._append_locked(task_id, tuple(lines))

    async def append_logs(self, task_id: str, entries: Sequence[LogEntry]) -> None:
        """See :meth:`fastapi_taskflow.protocols.Store.append_logs`."""
        lines = tuple(
            log_line(e.timestamp, e.level, e.message, e.attempt, e.extra) for e in entries
        )
        with self._state.lock:
            self._append_locked(task_id, lines)

    def _append_locked(self, task_id: str, lines: tuple[LogLine, ...]) -> None:
        state = self._state
        if lines and task_id in state.records:
            kept = state.logs.get(task_id)
            state.logs[task_id] = kept + lines if kept else lines

    async def query(self, query: TaskQuery) -> TaskPage:
        """See :meth:`fastapi_taskflow.protocols.Store.query`: a walk from the newest
        arrival backwards that stops once no record further back can belong to the page
        (see ``listing``); a filter that few records match walks further."""
        after = decode_cursor(query.cursor) if query.cursor else None
        matches = page_filter(query)
        limit = query.limit
        found: list[LiveRecord] = []
        with self._state.lock:
            records = self._state.records
            lag = self._state.order.lag(records)
            stop_before: datetime | None = None
            for record in reversed(records.values()):
                created = record.created_at
                if stop_before is not None and created < stop_before:
                    break  # every record further back is older than the page's last
                if after is not None and (created, record.task_id) >= after:
                    continue
                if matches is not None and not matches(record):
                    continue
                found.append(record)
                if stop_before is None and len(found) > limit:
                    # limit + 1 found: one further back can only come before the
                    # (limit + 1)-th newest of them if it is at most ``lag`` older
                    found.sort(key=NEWEST_FIRST, reverse=True)
                    stop_before = found[limit].created_at - lag
            found.sort(key=NEWEST_FIRST, reverse=True)
            page = [r.to_record() for r in found[:limit]]
        next_cursor = None
        if len(found) > limit:
            last = page[-1]
            next_cursor = encode_cursor(last.created_at, last.task_id)
        return TaskPage(items=page, next_cursor=next_cursor)

    async def stats(self) -> TaskStats:
        """See :meth:`fastapi_taskflow.protocols.Store.stats`."""
        with self._state.lock:
            totals = dict.fromkeys(TaskStatus, 0)
            for counts in self._state.func_counts.values():
                for status, n in counts.items():
                    totals[status] += n
            by_status = {s: n for s, n in totals.items() if n}
            by_func = {
                name: {s: n for s, n in counts.items() if n}
                for name, counts in self._state.func_counts.items()
                if any(counts.values())
            }
        return TaskStats(total=sum(by_status.values()), by_status=by_status, by_func=by_func)

    async def durations(
        self, *, func_names: Collection[str] | None = None
    ) -> dict[str, DurationStats]:
        """See :meth:`fastapi_taskflow.protocols.Store.durations`: over each function's
        ``DURATION_WINDOW`` newest finished tasks, walked newest first in the order they
        were stored (their creation order, but for late arrivals); the counters say
        how many each function has, so the walk stops once every function has its
        window."""
        wanted = set(func_names) if func_names is not None else None
        state = self._state
        with state.lock:
            window = {
                name: min(counts[_SUCCESS] + counts[_FAILED], DURATION_WINDOW)
                for name, counts in state.func_counts.items()
                if (wanted is None or name in wanted) and (counts[_SUCCESS] or counts[_FAILED])
            }
            per_func: dict[str, list[float]] = {name: [] for name in window}
            filling = dict(per_func)  # the functions whose window is not full yet
            for record in reversed(state.records.values()) if filling else ():
                if record.status not in DURATION_STATUSES:
                    continue
                name = record.func_name
                values = filling.get(name)
                started, finished = record.started_at, record.finished_at
                if values is None or started is None or finished is None:
                    continue
                values.append((finished - started).total_seconds())
                if len(values) == window[name]:
                    del filling[name]
                    if not filling:
                        break
        return {name: duration_stats(values) for name, values in per_func.items() if values}

    async def throughput(
        self, *, since: datetime, until: datetime, bucket_seconds: int
    ) -> list[ThroughputBucket]:
        """See :meth:`fastapi_taskflow.protocols.Store.throughput`."""
        width = timedelta(seconds=bucket_seconds)
        succeeded: list[int] = []  # bucket numbers since the epoch, one per task
        failed: list[int] = []
        with self._state.lock:
            for record in self._state.records.values():
                finished = record.finished_at
                if finished is None or not since <= finished < until:
                    continue
                status = record.status
                if status is _SUCCESS:
                    succeeded.append((finished - EPOCH) // width)
                elif status is _FAILED:
                    failed.append((finished - EPOCH) // width)
        ok, bad = Counter(succeeded), Counter(failed)
        return [
            ThroughputBucket(bucket_start=EPOCH + width * n, succeeded=ok[n], failed=bad[n])
            for n in sorted(ok.keys() | bad.keys())
        ]

    async def purge(self, *, finished_before: datetime, batch_size: int = 1000) -> int:
        """See :meth:`fastapi_taskflow.protocols.Store.purge`."""
        if batch_size < 1:
            return 0
        with self._state.lock:
            doomed: list[LiveRecord] = []
            for record in self._state.records.values():
                if (
                    record.status in TERMINAL_STATUSES
                    and record.finished_at is not None
                    and record.finished_at < finished_before
                ):
                    doomed.append(record)
                    if len(doomed) == batch_size:
                        break  # read no further than a batch
            for record in doomed:
                self._delete_locked(record)
        return len(doomed)
