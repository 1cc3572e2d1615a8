"""Group commit: new records and the starts and finishes of many tasks in one write.

On a durable backend a task's life is three writes: its record (create), PENDING →
RUNNING (start) and RUNNING → (SUCCESS, FAILED, ...) (finish). Written one by one, each
costs a round trip and a commit. Here everything the engine asks for during one turn of
the event loop — the records in the write buffer (``pending``) and the status changes
awaited by running tasks — goes to the store in one
:meth:`~fastapi_taskflow.protocols.Store.write_many`; while that write is in flight, the
next batch gathers. A caller's ``await`` returns only once its part is committed (or
refused), so no task starts, and no outcome or task id is reported, before the write
that guarantees it.

A start whose task's record is in the same write (a task started before its record was
written: E, an eager task, a container awaited by hand) is folded into that record: the
record is created RUNNING, with the start's fields, instead of being created PENDING and
then updated. The store ends in the same state and the start is answered with the
created record; a task whose id turns out to exist already (a record written by an
earlier write whose reply was lost) gets its start the ordinary way.

A store that says so (``concurrent_writes = 2``: Redis) takes two writes in flight at
once: while one is on its way, the next is built and sent on another connection, so the
client and the store work at the same time instead of waiting for each other. A write
that could have another beside it sends only the first half of its changes (and the
records that go with them); the rest goes at once in the next write. The callers of
the two halves then come back at different times and keep the writes overlapping;
without the split every caller would wait for the same write and the writes would fall
back into lock step. Two connections keep no order between them, so a record taken by a
write in flight is not taken by another, a change to a task that a write in flight
carries (its record, or an earlier change) waits for that write's answer, and a flush
returns only once the writes in flight before it are settled too (and fails with their
error). Without ``concurrent_writes`` a store gets one write at a time (SQLite: a single
writer).

If the write fails because the store is unreachable, every caller gets that error (and
retries through ``Availability``, as for a single write). Any other failure (one record
or outcome the store refuses) is retried item by item, unfolded, so one bad item fails
alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .errors import BackendUnavailableError
from .models import Applied, CreateResult, TaskRecord, TaskStatus, Transition, copy_with
from .pending import GATHER_TURNS, AfterWrite, OnRefused, PendingCreates, create_each
from .protocols import Store
from .runtime import reraise_if_cancelled

__all__ = ["GroupCommit", "concurrent_writes"]

logger = logging.getLogger("fastapi_taskflow")

_Waiter = asyncio.Future[TaskRecord | Applied | None]
_Change = tuple[Transition, _Waiter]
SPLIT_AT = 8
"""A write that could have another beside it sends half of its changes when it has at
least twice this many (see ``GroupCommit._split``)."""
_PENDING = TaskStatus.PENDING
_RUNNING = TaskStatus.RUNNING


def concurrent_writes(store: Store) -> int:
    """How many writes ``store`` takes in flight at once from one engine: its
    ``concurrent_writes`` attribute when it has one (see ``TaskBackend``), else 1."""
    value = getattr(store, "concurrent_writes", 1)
    return value if isinstance(value, int) and value >= 1 else 1


class _Write:
    """One write of the group commit, from taking its batch until it has settled."""

    __slots__ = ("done", "error", "sending", "taken", "unsure")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.done: asyncio.Future[None] = loop.create_future()
        """Set once the write is over (never set with an exception: see ``error``)."""
        self.error: BaseException | None = None
        """What the write's flushes were failed with, if anything (an unreachable
        store's error also fails the flushes of the writes that waited for it)."""
        self.taken: list[str] = []
        """The ids of the buffered records it writes (until they are settled)."""
        self.unsure: list[str] = []
        """The ids of every task it writes, until the store has answered for them."""
        self.sending = False
        """True from taking a batch until the store has answered it (its records may
        settle after that)."""


class GroupCommit:
    """The one writer of an engine's records and status changes on one event loop."""

    def __init__(
        self,
        store: Store,
        loop: asyncio.AbstractEventLoop,
        pending: PendingCreates,
        *,
        after: AfterWrite | None = None,
        on_refused: OnRefused | None = None,
        slot: Callable[[], asyncio.Lock] | None = None,
        now: Callable[[], datetime] | None = None,
        writes_at_once: int | None = None,
    ) -> None:
        """``pending`` is the write buffer whose records ride along with every write;
        ``after`` and ``on_refused`` are what :meth:`PendingCreates.settle` calls with
        them. ``slot()`` is a lock held while a write gathers and takes its batch,
        shared with the buffer's own flushes (``pending.write_slot`` by default).
        ``now()`` stamps the ``updated_at`` of a record created RUNNING by a folded
        start; without it, starts are not folded. ``writes_at_once`` is how many writes
        may be in flight together (default: the store's ``concurrent_writes``, else
        1)."""
        self.store = store
        self._now = now
        self.loop = loop
        self.pending = pending
        self._after = after
        self._on_refused = on_refused
        self._slot = slot or pending.write_slot
        self.writes_at_once = max(
            1, writes_at_once if writes_at_once is not None else concurrent_writes(store)
        )
        """How many writes may be in flight at once."""
        self._changes: list[_Change] = []
        self._flushes: list[asyncio.Future[None]] = []
        self._writes: list[_Write] = []
        """The writes not over yet (settling included), oldest first."""
        self._sending = 0
        """How many of them have taken a batch the store has not answered yet (at most
        ``writes_at_once``)."""
        self._gathering = False
        """True while a write waits for more work before it takes its batch (one at a
        time: a second one would take nothing)."""
        self._taken: set[str] = set()
        """Buffered records a write in flight holds: no other write takes them."""
        self._unsure: set[str] = set()
        """Tasks a write in flight sends and has not had answered: no other write sends
        a change for them (two connections keep no order between them)."""
        self._kick_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        """The tasks of the writes not over yet (kept referenced; see ``drain``)."""
        self._stopped = False
        """Set by a ``drain`` that ran out of time: no write starts any more."""
        self.batches_written = 0
        """How many writes were made (for tests and benchmarks)."""

    async def transition(self, change: Transition) -> TaskRecord | Applied | None:
        """Apply ``change`` with the next write; return what ``Store.transition`` would
        (or ``APPLIED``, for a change with ``read_back=False``)."""
        waiter: _Waiter = self.loop.create_future()
        self._changes.append((change, waiter))
        self._wake()
        return await waiter

    async def flush(self) -> None:
        """Write the buffered records with the next write; return once every record
        buffered now has left the buffer (stored, or refused and handed to
        ``on_refused``), including those of writes already in flight. Raises the
        write's error when the store is unreachable; the records then stay buffered
        for the next flush."""
        if not len(self.pending):
            return
        done: asyncio.Future[None] = self.loop.create_future()
        self._flushes.append(done)
        self._wake()
        await done

    def _wake(self) -> None:
        if not self._kick_scheduled and not self._gathering and self._sending < self.writes_at_once:
            self._kick_scheduled = True
            self.loop.call_soon(self._kick)

    def _kick(self) -> None:
        self._kick_scheduled = False
        if (
            self._stopped
            or self._gathering
            or self._sending >= self.writes_at_once
            or not (self._flushes or self._ready())
        ):
            return
        self._gathering = True
        write = _Write(self.loop)
        self._writes.append(write)
        task = self.loop.create_task(self._write(write), name="taskflow-group-commit")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float) -> None:
        """Wait at most ``timeout`` seconds for the writes in flight, then cancel those
        still running and wait for them to end (a shutdown, before the store is closed).

        A write outlives the callers that gave up on it (a task cancelled while its
        outcome was being written): without this, it would run on after its store is
        closed, or be destroyed with the loop inside a transaction.
        """
        loop = self.loop
        deadline = loop.time() + timeout
        # A write that ends starts the next one when more waits: wait for those too.
        while self._tasks and loop.time() < deadline:
            await asyncio.wait(set(self._tasks), timeout=deadline - loop.time())
        if not self._tasks:
            return
        self._stopped = True  # no write starts any more: what is left is cancelled
        while self._tasks:
            for task in self._tasks:
                task.cancel()
            await asyncio.wait(set(self._tasks))
        for _, waiter in self._changes:
            waiter.cancel()
        for done in self._flushes:
            done.cancel()
        self._changes, self._flushes = [], []

    def _ready(self) -> bool:
        """True when a change waits that the next write may send."""
        unsure = self._unsure
        if not unsure:
            return bool(self._changes)
        return any(change.task_id not in unsure for change, _ in self._changes)

    async def _write(self, write: _Write) -> None:
        flushes: list[asyncio.Future[None]] = []
        took = False
        try:
            # Let the tasks and requests a step behind this one ask too: without this,
            # the first change of a burst goes alone, the rest wait for it, and under
            # load the writes fall into lock step with one or two changes each.
            async with self._slot():
                for _ in range(GATHER_TURNS):
                    await asyncio.sleep(0)
                changes = self._take_changes()
                excluding = self._taken
                if len(changes) >= 2 * SPLIT_AT and self._sending + 1 < self.writes_at_once:
                    # The flushes go with the rest, whose write waits for this one.
                    changes, excluding = self._split(changes)
                else:
                    flushes, self._flushes = self._flushes, []
                creates = self.pending.snapshot(excluding=excluding)
                # A flush waits for the records that writes in flight hold too.
                earlier = [other for other in self._writes if other.taken]
                write.taken = [record.task_id for record in creates]
                self._taken.update(write.taken)
                if self.writes_at_once > 1:  # else the next write begins once it is answered
                    write.unsure = write.taken + [change.task_id for change, _ in changes]
                    self._unsure.update(write.unsure)
                self._gathering, took = False, True
                if creates or changes:
                    write.sending = True
                    self._sending += 1
                if self._flushes or self._changes:
                    self._wake()  # the next write gathers while this one is sent
            try:
                if creates or changes:
                    await self._write_batch(write, creates, changes)
            except BaseException as exc:
                write.error = exc
            for other in earlier:
                await other.done
                if isinstance(other.error, BackendUnavailableError):
                    # its records stay buffered: this write's flushes fail with it
                    write.error = write.error or other.error
            error = write.error
            for done in flushes:
                if error is None:
                    if not done.done():
                        done.set_result(None)
                else:
                    _fail(done, error)
            if error is not None and not isinstance(error, Exception):
                raise error
            # else every caller has the error: the flushes, and the changes' callers
            # when the store was unreachable
        except BaseException as exc:
            write.error = write.error or exc
            for done in flushes:
                _fail(done, exc)
            raise
        finally:
            if not took:
                self._gathering = False  # cancelled before it took its batch
            self._answered(write)
            self._taken.difference_update(write.taken)
            self._writes.remove(write)
            if not write.done.done():
                write.done.set_result(None)
            self._kick()

    def _take_changes(self) -> list[_Change]:
        """The changes the next write sends: one per task id (a store call takes
        distinct ids), none for a task that a write in flight sends; the others wait
        for a later write, in order."""
        batch, unsure = self._changes, self._unsure
        seen: set[str] = set()
        now: list[_Change] = []
        later: list[_Change] = []
        for item in batch:
            task_id = item[0].task_id
            (later if task_id in seen or task_id in unsure else now).append(item)
            seen.add(task_id)
        self._changes = later
        return now

    def _split(self, changes: list[_Change]) -> tuple[list[_Change], set[str]]:
        """Keep the first half of ``changes`` for this write and give the rest, with
        their tasks' buffered records, back to the next one, which starts at once.

        Only when another write may be in flight beside this one. The callers of the
        two halves then come back at different times, so the writes keep overlapping
        instead of falling into lock step: every caller waiting for one write, nobody
        asking for the next one until it returns. Returns the changes to send and the
        ids of the buffered records this write leaves alone."""
        keep = len(changes) // 2
        changes, rest = changes[:keep], changes[keep:]
        self._changes[:0] = rest
        return changes, self._taken | {change.task_id for change, _ in rest}

    def _answered(self, write: _Write) -> None:
        """The store has answered ``write``: its tasks' next changes may go, and so may
        another write."""
        if write.sending:
            write.sending = False
            self._sending -= 1
        if write.unsure:
            self._unsure.difference_update(write.unsure)
            write.unsure = []
        if self._changes or self._flushes:
            self._wake()

    async def _write_batch(
        self, write: _Write, creates: list[TaskRecord], changes: list[_Change]
    ) -> None:
        """Write ``creates`` and ``changes`` together; settle the buffer and answer each
        change's caller. Raises what the flushes waiting for ``creates`` should see."""
        store = self.store
        folded: list[tuple[int, _Change]] = []
        written, rest = creates, changes
        if creates and changes and self._now is not None:
            written, rest, folded = _fold_starts(creates, changes, self._now())
        try:
            if written and rest:
                made, results = await store.write_many(written, [change for change, _ in rest])
            elif written:
                made = await store.create_many(written)
                results = []
            else:
                made, results = [], await store.transition_many([change for change, _ in rest])
            self.batches_written += 1
        except BackendUnavailableError as exc:
            for _, waiter in changes:
                _fail(waiter, exc)
            raise
        except asyncio.CancelledError:
            for _, waiter in changes:
                waiter.cancel()
            raise
        except Exception:
            reraise_if_cancelled()
            logger.debug("a batch write was refused; writing its items one by one")
            await self._write_each(write, creates, changes)
            return
        for (_, waiter), result in zip(rest, results, strict=True):
            if not waiter.done():
                waiter.set_result(result)
        if folded:
            await self._answer_folded(folded, made)
        self._answered(write)
        if creates:
            await self.pending.settle(creates, [], self._after, self._on_refused)

    async def _answer_folded(
        self, folded: list[tuple[int, _Change]], made: list[CreateResult]
    ) -> None:
        """Answer the folded starts from their records' create results.

        A record created is the start applied. A record not created because its id
        exists already (written by an earlier write whose reply was lost) did not take
        the start: it is applied now, as the start would have been. Any other record
        not created (its idempotency key belongs to another task) leaves nothing for
        the start to apply to: None, as ``transition`` answers for a missing task.
        """
        again: list[_Change] = []
        for index, (change, waiter) in folded:
            result = made[index]
            if result.created:
                if not waiter.done():
                    waiter.set_result(result.record)
            elif result.record.task_id == change.task_id:
                again.append((change, waiter))
            elif not waiter.done():
                waiter.set_result(None)
        if not again:
            return
        try:
            moved = await self.store.transition_many([change for change, _ in again])
        except Exception as exc:
            reraise_if_cancelled()
            for _, waiter in again:
                _fail(waiter, exc)
            return
        for (_, waiter), changed in zip(again, moved, strict=True):
            if not waiter.done():
                waiter.set_result(changed)

    async def _write_each(
        self, write: _Write, creates: list[TaskRecord], changes: list[_Change]
    ) -> None:
        """The batch again item by item (creates first), so that one item the store
        refuses fails alone."""
        try:
            refused = await create_each(self.store, creates) if creates else []
        except BaseException as exc:  # unreachable now: every caller gets it
            for _, waiter in changes:
                _fail(waiter, exc)
            raise
        for change, waiter in changes:
            try:
                result = await self.store.transition(
                    change.task_id, expected=change.expected, new=change.new, update=change.update
                )
            except Exception as exc:
                reraise_if_cancelled()
                _fail(waiter, exc)
            else:
                if not waiter.done():
                    waiter.set_result(result)
        self._answered(write)
        if creates:
            await self.pending.settle(creates, refused, self._after, self._on_refused)


def _fold_starts(
    creates: list[TaskRecord], changes: list[_Change], now: datetime
) -> tuple[list[TaskRecord], list[_Change], list[tuple[int, _Change]]]:
    """Fold each start (PENDING -> RUNNING) of a task created by the same write into its
    record. Returns the records to write (a folded one created RUNNING, with the
    start's fields and ``updated_at`` = ``now``), the changes still to apply, and the
    folded changes with the index of their record. The buffered records themselves
    are left as they are."""
    at = {record.task_id: index for index, record in enumerate(creates)}
    written: list[TaskRecord] | None = None
    rest: list[_Change] = []
    folded: list[tuple[int, _Change]] = []
    for item in changes:
        change = item[0]
        index = at.get(change.task_id)
        if (
            index is None
            or change.new is not _RUNNING
            or _PENDING not in change.expected
            or creates[index].status is not _PENDING
        ):
            rest.append(item)
            continue
        if written is None:
            written = list(creates)
        fields = change.update.changes() if change.update is not None else {}
        fields["status"] = _RUNNING
        fields["updated_at"] = now
        written[index] = copy_with(creates[index], fields)
        folded.append((index, item))
    if written is None:
        return creates, changes, []
    return written, rest, folded


def _fail(waiter: asyncio.Future[Any], exc: BaseException) -> None:
    if not waiter.done():
        if isinstance(exc, asyncio.CancelledError):
            waiter.cancel()
        else:
            waiter.set_exception(exc)
