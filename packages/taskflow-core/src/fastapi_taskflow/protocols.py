"""The contracts between the engine and storage: Store, Backend and Observer.

A backend package implements :class:`Store` and :class:`Backend` on one object (one
connection pool) and satisfies :class:`TaskBackend`; ``fastapi_taskflow.testing`` proves
it does. The engine owns every semantic (retries, backoff, argument encoding, events);
a backend implements small atomic primitives and nothing is optional.

Rules every implementation follows:

* Time comes from the backend's ``clock`` (never ``datetime.now()``), so the conformance
  suite can move heartbeats and delays without sleeping.
* Every method is atomic on its own: two processes calling it at once get an outcome
  that one of them could have got alone.
* Datetimes passed in and returned are aware UTC.
* A driver's own exceptions are wrapped in :class:`~fastapi_taskflow.errors.TaskflowError`
  subclasses (``BackendUnavailableError`` when the server is unreachable), cause kept.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from .clock import Clock
from .events import LifecycleEvent, LogEvent
from .models import (
    Applied,
    Claim,
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
)

__all__ = ["Backend", "BackendFactory", "InProcessStore", "Observer", "Store", "TaskBackend"]


@runtime_checkable
class Store(Protocol):
    """The durable truth about tasks: records, their status and their logs."""

    async def create(self, record: TaskRecord) -> CreateResult:
        """Insert ``record`` unless something already holds its id or idempotency key.

        Atomic insert-if-absent. When ``record.idempotency_key`` is held by a task whose
        status is not in ``KEY_RELEASING_STATUSES`` (FAILED, REJECTED), nothing is written
        and the result is ``created=False`` with that task. When a record with the same
        ``task_id`` exists, the result is ``created=False`` with it (so retrying a create
        after a lost reply is safe). Otherwise ``created=True`` with the stored record.
        """
        ...

    async def create_many(self, records: Sequence[TaskRecord]) -> list[CreateResult]:
        """Create several records, one :class:`CreateResult` per record, in order.

        Each record obeys the rules of :meth:`create`; the batch need not be one
        transaction, but a record is either fully created or not at all.
        """
        ...

    async def get(self, task_id: str) -> TaskRecord | None:
        """Return the record with its logs, or None when no task has this id (also
        for an id holding a NUL or a lone surrogate, which no task can have: see
        ``limits.storable_text``)."""
        ...

    async def find_by_key(self, idempotency_key: str) -> TaskRecord | None:
        """Return the task that currently holds ``idempotency_key``, or None.

        Tasks in ``KEY_RELEASING_STATUSES`` do not hold their key; no task holds a key
        with a NUL or a lone surrogate (``add_task()`` refuses one).
        """
        ...

    async def transition(
        self,
        task_id: str,
        *,
        expected: Collection[TaskStatus],
        new: TaskStatus,
        update: TaskUpdate | None = None,
        take_key: bool = False,
    ) -> TaskRecord | None:
        """Compare-and-set the status: move to ``new`` only if the status is in ``expected``.

        Applies ``update`` in the same atomic step and sets ``updated_at`` to now.
        Returns the record after the change (logs not loaded), or None when the task
        does not exist or its status was not in ``expected`` (nothing is written then).
        Of many concurrent callers with the same ``expected``, at most one succeeds.

        A move into ``KEY_RELEASING_STATUSES`` releases the task's idempotency key; any
        other move leaves the key where it is (a task that released its key does not
        hold it again by leaving FAILED).

        ``take_key=True`` (an operator retry of a FAILED task) makes the task hold its
        idempotency key again in the same atomic step: afterwards :meth:`find_by_key`
        returns it and :meth:`create` with that key answers ``created=False`` with it.
        If another task holds the key at that moment, nothing is written and
        :class:`~fastapi_taskflow.errors.IdempotencyKeyHeldError` is raised naming that
        task (``key_holder``); of a transition and concurrent creates with the key,
        exactly one ends up holding it. The status is compared first: a task that does
        not exist or is not in ``expected`` gives None, whoever holds the key. The task
        must have an idempotency key and ``new`` must be a status that holds it (not in
        ``KEY_RELEASING_STATUSES``); otherwise ``InvalidOperationError`` is raised
        (:mod:`fastapi_taskflow.key_taking` has both checks). Only this method takes
        keys: :meth:`transition_many` and :meth:`write_many` never do.
        """
        ...

    async def transition_many(
        self, transitions: Sequence[Transition]
    ) -> list[TaskRecord | Applied | None]:
        """Apply several compare-and-sets at once; one result per item, in order.

        Each item obeys :meth:`transition` exactly (its result is what ``transition``
        would have returned). This is the engine's group commit: the starts and finishes
        of many tasks arrive together, so a backend writes them in as few statements,
        round trips and commits as it can (one transaction, one script call, one
        pipeline). The ids in one call are distinct.

        An item with ``read_back=False`` (the engine's outcome writes when nobody
        listens for events) needs no record back: its result may be
        :data:`~fastapi_taskflow.models.APPLIED` instead of the record when it was
        applied (None when it was not, as always); returning the record is correct
        too. The change itself is the same either way.
        """
        ...

    async def write_many(
        self, creates: Sequence[TaskRecord], transitions: Sequence[Transition]
    ) -> tuple[list[CreateResult], list[TaskRecord | Applied | None]]:
        """``create_many(creates)`` then ``transition_many(transitions)``, as one write.

        The engine's group commit, whole: the records that requests just accepted and the
        starts and finishes of running tasks reach the store in the same turn, and a
        backend writes them together (one transaction, one pipeline) rather than in two
        commits. The results are exactly what the two calls would return, in order. The
        creates are applied first, so a transition may name a task created in the same
        call; the ids among ``transitions`` are distinct (``read_back`` as for
        :meth:`transition_many`). Either sequence may be empty.
        When the call fails, any part of it may have been written, as with the two calls
        made one after the other.
        """
        ...

    async def owners(self) -> set[str]:
        """The owners of tasks in ``ACTIVE_STATUSES`` (PENDING, RUNNING); None is left out.

        Recovery compares them with the instances' heartbeats to find tasks whose owner
        died.
        """
        ...

    async def owned(self, owner: str, *, limit: int = 100) -> list[str]:
        """The ids of up to ``limit`` tasks in ``ACTIVE_STATUSES`` whose owner is ``owner``.

        Oldest ``created_at`` first. Ids only, so a record that cannot be read (corrupt)
        is listed too: recovery ends it.
        """
        ...

    async def adopt(self, task_id: str, *, owner: str, new_owner: str | None) -> TaskRecord | None:
        """Compare-and-set the owner of an active task.

        If the task's status is in ``ACTIVE_STATUSES`` and its owner is ``owner``, set the
        owner to ``new_owner`` (status and ``updated_at`` unchanged) and return the record
        after the change (logs not loaded); otherwise write nothing and return None. Of
        many concurrent adopters of one task, at most one succeeds. ``new_owner=None``
        releases a task that a queue now holds (it then counts for no owner). A record
        that cannot be read gives None (its owner may have changed).
        """
        ...

    async def update(self, task_id: str, update: TaskUpdate) -> TaskRecord | None:
        """Write the fields set on ``update`` without touching the status.

        Returns the record after the change, or None when the task does not exist.
        """
        ...

    async def append_logs(self, task_id: str, entries: Sequence[LogEntry]) -> None:
        """Append log entries to a task, keeping their order. Unknown task: no-op."""
        ...

    async def query(self, query: TaskQuery) -> TaskPage:
        """Return one page of matching tasks, newest ``created_at`` first.

        Ties on ``created_at`` are ordered by ``task_id`` descending. Pagination is keyset:
        ``next_cursor`` encodes the last item's ``(created_at, task_id)``
        (``models.encode_cursor``), so pages stay correct while tasks are added. Items
        carry no logs. A malformed cursor raises ``InvalidOperationError`` (a
        ``ValueError``); a text filter holding a NUL or a lone surrogate matches no task
        (``limits.unmatchable``).

        ``query.q`` keeps tasks where it occurs in ``func_name``, ``task_id``, ``error``
        or a tag key or value, folding ASCII letters only
        (:func:`~fastapi_taskflow.models.matches_text` is the reference).
        """
        ...

    async def stats(self) -> TaskStats:
        """Count tasks by status and by function name, computed by the store."""
        ...

    async def durations(
        self, *, func_names: Collection[str] | None = None
    ) -> dict[str, DurationStats]:
        """Run-time percentiles per function name, computed by the store.

        A task counts when its status is in ``DURATION_STATUSES`` (SUCCESS, FAILED) and
        both ``started_at`` and ``finished_at`` are set; its duration is
        ``finished_at - started_at`` in seconds. Percentiles are nearest-rank
        (``models.nearest_rank``). A store may bound the work to each function's most
        recent finished tasks (by finish or by creation time), keeping at least
        ``models.DURATION_WINDOW`` of them; it should, so that the cost does not grow
        with the history it keeps.
        Functions without such a task are absent; ``func_names`` (None: all) limits the
        result to those names.
        """
        ...

    async def throughput(
        self, *, since: datetime, until: datetime, bucket_seconds: int
    ) -> list[ThroughputBucket]:
        """Count tasks that finished SUCCESS or FAILED per time bucket, oldest first.

        Counts tasks now in SUCCESS or FAILED whose ``finished_at`` is in
        ``[since, until)``, grouped by ``models.bucket_start(finished_at,
        bucket_seconds)``. Only buckets with at least one task are returned.
        ``bucket_seconds`` is a positive integer.
        """
        ...

    async def purge(self, *, finished_before: datetime, batch_size: int = 1000) -> int:
        """Delete at most ``batch_size`` terminal tasks finished before the cutoff.

        Deletes their logs too and returns how many tasks were deleted; call again until
        it returns 0. Active tasks are never deleted.
        """
        ...


@runtime_checkable
class Backend(Protocol):
    """Coordination between instances: queues, heartbeats, locks, schedules and events."""

    async def enqueue(
        self,
        task_id: str,
        *,
        queue: str,
        priority: int = 0,
        not_before: datetime | None = None,
    ) -> None:
        """Put a task on ``queue``, runnable once ``not_before`` has passed (None: now).

        Idempotent: a task is on a queue at most once, and enqueuing it again replaces its
        priority and ``not_before``.
        """
        ...

    async def claim(self, *, queue: str, owner: str, limit: int = 1) -> list[Claim]:
        """Take up to ``limit`` due tasks off ``queue`` and hand them to ``owner``.

        Due means ``not_before <= now``. Order: higher priority first; among equal
        priorities the earliest due time first (``not_before``, or the enqueue time when
        there is none), then enqueue order. A claimed task leaves the queue; no task is
        ever handed to two claimers. In the same atomic step the claimed task's record,
        if it exists and is PENDING, gets ``owner`` as its owner (so the task is recovered
        if the claimer dies before it starts). A record in any other status keeps its
        owner: a RUNNING task found on a queue (an enqueue retried after its reply was
        lost, say) belongs to the instance running it, whose death must still be noticed,
        and the claimer does not run it. Returns an empty list when nothing is due.
        """
        ...

    async def dequeue(self, task_id: str, *, queue: str) -> bool:
        """Remove a waiting task from ``queue``; True if it was there."""
        ...

    async def queue_length(self, queue: str) -> int:
        """Count the tasks on ``queue``, due or not."""
        ...

    async def beat(self, instance_id: str) -> None:
        """Record that ``instance_id`` is alive: set its heartbeat to the clock's now.

        Inserts the instance or overwrites its previous heartbeat. One small write per
        instance, whatever the number of tasks it holds.
        """
        ...

    async def heartbeats(self) -> dict[str, datetime]:
        """The last heartbeat of every instance that has one, by instance id."""
        ...

    async def forget_instance(self, instance_id: str) -> None:
        """Delete the heartbeat of ``instance_id`` (it stopped, or was found dead).

        Unknown instance: no-op.
        """
        ...

    async def acquire_lock(self, name: str, *, owner: str, ttl_seconds: float) -> bool:
        """Take the named lock for ``ttl_seconds``; re-entrant for its owner (extends it).

        Refused while another owner holds a live lock. Used for periodic schedules.
        """
        ...

    async def release_lock(self, name: str, *, owner: str) -> bool:
        """Release the named lock; False if ``owner`` did not hold it."""
        ...

    async def schedule_once(
        self,
        run_key: str,
        *,
        task_id: str,
        queue: str,
        run_at: datetime,
        priority: int = 0,
    ) -> bool:
        """Enqueue ``task_id`` to run at ``run_at`` unless ``run_key`` was used before.

        Exactly once across instances: of all calls with one ``run_key``, one returns True
        and enqueues; the others return False and change nothing.
        """
        ...

    async def publish(self, event: LifecycleEvent | LogEvent) -> None:
        """Send an event to every subscriber on every instance (best effort)."""
        ...

    async def publish_many(self, events: Sequence[LifecycleEvent | LogEvent]) -> None:
        """:meth:`publish` each of ``events``, in their order, in one write where the
        backend can (one statement, one pipeline): the engine sends the events of its
        tasks this way, a batch at a time, off the tasks' own path."""
        ...

    async def announce_reader(self, reader_id: str, *, ttl_seconds: float) -> None:
        """Record that ``reader_id`` reads published events for the next
        ``ttl_seconds`` (calling again extends it; the engine does while it reads).

        Instances publish their tasks' events only while some reader is announced
        (see :meth:`readers`): a subscription alone does not make them publish.
        """
        ...

    async def withdraw_reader(self, reader_id: str) -> None:
        """Delete the announcement of ``reader_id``. Unknown reader: no-op."""
        ...

    async def readers(self) -> set[str]:
        """The ids of the readers whose announcement has not expired."""
        ...

    def subscribe(
        self, *, skip_instance: str | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[LifecycleEvent | LogEvent]]:
        """Open a subscription to published events.

        ``async with backend.subscribe() as events: async for event in events: ...``.
        Every event published after the ``async with`` is entered is delivered, in
        publication order per publisher, except those whose ``instance_id`` is
        ``skip_instance`` (an instance listening for the others' events: its own are
        left out, without being decoded where the backend can tell from the wire
        form, :func:`~fastapi_taskflow.events.encode_bus_event`).
        """
        ...


@runtime_checkable
class TaskBackend(Store, Backend, Protocol):
    """What a backend package provides: a Store and a Backend on one connection pool.

    A backend may also set ``concurrent_writes`` (an int, 1 when absent): how many
    writes (``write_many``, ``create_many``, ``transition_many``) the engine's group
    commit may have in flight at once on one event loop. Set it to 2 only when two
    calls really run side by side (each on its own connection) and a second write in
    flight raises throughput; a single-writer store keeps 1. It is optional, so it is
    not a protocol member (``isinstance`` checks do not ask for it).
    """

    clock: Clock
    durable: bool
    """True when tasks outlive the process (arguments must then be JSON-encodable)."""

    async def open(self) -> None:
        """Connect and create the schema if needed. Idempotent."""
        ...

    async def close(self) -> None:
        """Release connections. Idempotent; the object may not be used afterwards."""
        ...

    def fork(self) -> TaskBackend:
        """Return an unopened backend over the same storage, for another event loop.

        The engine serves blocking calls (``task_manager.store.get()`` from a sync route)
        from a private thread with its own loop, and uses a fork there; the caller opens
        and closes the fork on that loop. A backend whose connections are bound to a loop
        gives the fork its own pool; the memory backend's forks share its state. A fork
        uses the same clock.
        """
        ...


@runtime_checkable
class InProcessStore(Protocol):
    """What a store that lives in this process may add: a synchronous create and
    status change, on records kept as :class:`~fastapi_taskflow.models.LiveRecord`.

    ``add_task()`` must not wait on the network, so it hands records to a write buffer
    that is flushed on the event loop. A store whose records are plain memory of this
    process (``memory://``) can take the record at once instead, with no buffer, no flush
    and no wait before the response; and it can change a status without a coroutine. The
    engine uses both when the backend is not durable.

    The engine and such a store share one object per task, a ``LiveRecord``: the engine
    builds it, ``create_now`` keeps it, ``transition_now`` changes it in place and
    returns it. Everything the ``Store`` methods hand out stays a ``TaskRecord``
    snapshot.
    """

    def create_now(self, record: LiveRecord | TaskRecord) -> TaskRecord | None:
        """What :meth:`Store.create` does, done before returning (thread-safe): None
        when ``record`` was created, else the stored record that holds its id or its
        idempotency key (a snapshot, as :meth:`Store.create` returns it).

        A ``LiveRecord`` is handed over: the store keeps that very object and changes
        it in place later; the engine does not use it again but through this store. A
        ``TaskRecord`` is copied.
        """
        ...

    def transition_now(
        self,
        task_id: str,
        *,
        expected: Collection[TaskStatus],
        new: TaskStatus,
        changes: Mapping[str, Any] | None = None,
        at: datetime | None = None,
    ) -> LiveRecord | None:
        """What :meth:`Store.transition` does, done before returning (thread-safe).

        ``changes`` holds the fields to set, by name, as :meth:`TaskUpdate.changes`
        returns them (the engine builds no ``TaskUpdate`` for an in-process store). The
        store must not keep or change the mapping itself. ``at`` is the time of the
        change, for ``updated_at`` (the engine has read the clock already, for
        ``finished_at``); None: the store reads its clock. It returns the record it
        keeps, changed in place: the engine only reads it, and never after the task's
        next status change.
        """
        ...

    def start_now(
        self, task_id: str, *, attempt: int, started_at: datetime, owner: str | None
    ) -> LiveRecord | None:
        """The start of an attempt, done before returning (thread-safe): what
        ``transition_now(task_id, expected={PENDING}, new=RUNNING, changes={"attempt":
        attempt, "started_at": started_at, "owner": owner, "error": None},
        at=started_at)`` does, without a mapping to build and walk (every task starts,
        so this is the engine's most frequent change)."""
        ...

    def finish_now(
        self,
        task_id: str,
        *,
        status: TaskStatus,
        finished_at: datetime,
        result: Any = None,
        error: str | None = None,
    ) -> LiveRecord | None:
        """The end of an attempt, done before returning (thread-safe): what
        ``transition_now(task_id, expected={RUNNING}, new=status, changes={
        "finished_at": finished_at, "result": result, "error": error},
        at=finished_at)`` does, for a final ``status``. The engine calls it with values
        that are storable already (a result encoded, an error made storable)."""
        ...

    def append_now(self, task_id: str, lines: Sequence[LogLine]) -> None:
        """What :meth:`Store.append_logs` does, done before returning (thread-safe),
        with the lines as :data:`~fastapi_taskflow.models.LogLine` tuples, which the
        store may keep as they are (the engine does not use them again)."""
        ...


class BackendFactory(Protocol):
    """What the ``taskflow.backends`` entry point names: builds a backend from a URL."""

    def __call__(self, url: str, *, clock: Clock) -> TaskBackend:
        """Return an unopened backend for ``url``; raise ``BackendURLError`` if it is bad."""
        ...


@runtime_checkable
class Observer(Protocol):
    """Receives every task's lifecycle and log events.

    An observer that raises is reported through the ``fastapi_taskflow`` logger and never
    breaks a task.
    """

    async def on_lifecycle(self, event: LifecycleEvent) -> None:
        """Called when a task changes status."""
        ...

    async def on_log(self, event: LogEvent) -> None:
        """Called when a task writes a log line."""
        ...
