"""Accepted tasks not yet written to the store, flushed in batches.

``add_task()`` never waits on the network: it puts the new PENDING record here and
returns. The buffer is flushed in batches: before the response carrying the ids is sent
(``install()``'s middleware), before a task starts, and soon after being filled when an
event loop runs. On the engine's loop the group commit (``group_commit``) writes it
together with the status changes waiting there, in one ``write_many``; elsewhere (a
blocking call from another thread) :meth:`PendingCreates.flush` writes it with one
``create_many``. Until then, reads through ``task_manager.store`` see buffered records,
so a task is never invisible to its caller.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Collection

from .errors import BackendUnavailableError
from .models import TaskRecord
from .protocols import Store

__all__ = ["GATHER_TURNS", "AfterWrite", "OnRefused", "PendingCreates", "create_each"]

GATHER_TURNS = 2
"""Event-loop turns a write waits for more work before it takes its batch."""

AfterWrite = Callable[[list[TaskRecord]], Awaitable[None]]
"""Awaited with the records a write stored (the engine enqueues the queued ones)."""

OnRefused = Callable[[list[tuple[TaskRecord, Exception]]], Awaitable[None]]
"""Awaited with the records the store refused, each with the store's error."""


class PendingCreates:
    """A thread-safe buffer of records waiting for ``create_many``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, TaskRecord] = {}
        self._flush_lock: asyncio.Lock | None = None
        self._flush_loop: asyncio.AbstractEventLoop | None = None

    def add(self, record: TaskRecord) -> None:
        """Buffer a record to create."""
        with self._lock:
            self._records[record.task_id] = record

    def get(self, task_id: str) -> TaskRecord | None:
        """Return the buffered record with this id, or None."""
        with self._lock:
            return self._records.get(task_id)

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def discard(self, task_ids: set[str]) -> list[str]:
        """Drop buffered records (a request that could not be acknowledged); return them."""
        with self._lock:
            gone = [task_id for task_id in task_ids if self._records.pop(task_id, None)]
        return gone

    def __contains__(self, task_id: object) -> bool:
        with self._lock:
            return task_id in self._records

    def snapshot(self, excluding: Collection[str] = ()) -> list[TaskRecord]:
        """The buffered records, in the order they were added, but those whose ids are
        in ``excluding`` (held by a write in flight)."""
        with self._lock:
            if not excluding:
                return list(self._records.values())
            return [record for record in self._records.values() if record.task_id not in excluding]

    async def flush(
        self,
        store: Store,
        after: AfterWrite | None = None,
        on_refused: OnRefused | None = None,
    ) -> None:
        """Write every buffered record with ``create_many``; concurrent flushes queue up.

        ``after`` is awaited once the store has the batch (the engine enqueues queued
        tasks there). A record leaves the buffer only once the store has it and ``after``
        is done (or failed), so a caller that sees its record still buffered and flushes
        returns only when both are done; a failed write loses nothing: the error
        propagates and the next flush tries again.

        A record the store refuses (anything but ``BackendUnavailableError``) never
        blocks the others: when the batch write fails, each record is created on its
        own, the refused ones leave the buffer and are handed to ``on_refused`` with
        the store's error, and the rest carry on.
        """
        if not self._records:
            return  # nothing to write (a racy read: the lock below decides)
        async with self.write_slot():
            # Let requests a step behind add their records too (see group_commit).
            for _ in range(GATHER_TURNS):
                await asyncio.sleep(0)
            batch = self.snapshot()
            if not batch:
                return
            await self.settle(batch, await _create(store, batch), after, on_refused)

    async def settle(
        self,
        batch: list[TaskRecord],
        refused: list[tuple[TaskRecord, Exception]],
        after: AfterWrite | None,
        on_refused: OnRefused | None,
    ) -> None:
        """Let a written ``batch`` leave the buffer: the ``refused`` records (with the
        store's errors) go to ``on_refused``, the stored ones to ``after``; each leaves
        once that is done (or failed)."""
        if refused:
            with self._lock:
                for record, _ in refused:
                    if self._records.get(record.task_id) is record:
                        del self._records[record.task_id]
            gone = {record.task_id for record, _ in refused}
            batch = [record for record in batch if record.task_id not in gone]
            if on_refused is not None:
                await on_refused(refused)
        try:
            if after is not None:
                await after(batch)
        finally:
            with self._lock:
                for record in batch:
                    if self._records.get(record.task_id) is record:
                        del self._records[record.task_id]

    def write_slot(self) -> asyncio.Lock:
        """The running loop's lock around taking a batch: this buffer's own
        ``create_many`` (a blocking caller's flush) holds it for its whole write, a
        group-commit write while it gathers and takes its batch (the group commit
        itself decides how many of its writes are in flight)."""
        loop = asyncio.get_running_loop()
        if self._flush_lock is None or self._flush_loop is not loop:
            self._flush_lock = asyncio.Lock()
            self._flush_loop = loop
        return self._flush_lock


async def _create(store: Store, batch: list[TaskRecord]) -> list[tuple[TaskRecord, Exception]]:
    """Create ``batch``; return the records the store refused, with its errors.

    One ``create_many`` normally. If it fails for a reason other than an unreachable
    store, the records are created one by one (safe: a create of an existing id is a
    no-op) so that one refused record fails alone.
    """
    try:
        await store.create_many(batch)
    except BackendUnavailableError:
        raise
    except Exception:
        return await create_each(store, batch)
    return []


async def create_each(store: Store, batch: list[TaskRecord]) -> list[tuple[TaskRecord, Exception]]:
    """Create ``batch`` one record at a time (after a batch write failed, so that one
    refused record fails alone); return the refused ones with the store's errors."""
    refused: list[tuple[TaskRecord, Exception]] = []
    for record in batch:
        try:
            await store.create(record)
        except BackendUnavailableError:
            raise
        except Exception as exc:
            refused.append((record, exc))
    return refused
