"""Adopting the tasks of instances that died.

Every instance with a durable backend looks for expired leases a few times per lease
period. The first to re-lease an expired task adopts it:

* PENDING (accepted, never started): put on its queue, where exactly one instance
  claims and runs it (the PENDING → RUNNING compare-and-set admits one);
* RUNNING (the owner died mid-run): INTERRUPTED, or — for tasks registered with
  ``requeue_on_interrupt=True`` — PENDING again and queued (at least once);
* finished, or never written (the owner died between lease and create): lease dropped.

Running a queued task needs its function: an instance that does not have the task's name
registered puts it back on the queue for one that does, and logs a warning once.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from .cancellation import cancel_adopted
from .models import Lease, TaskStatus, TaskUpdate
from .rehydrate import fail_unreadable
from .runtime import reraise_if_cancelled

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["Recovery"]

logger = logging.getLogger("fastapi_taskflow")

_RUNNING = frozenset({TaskStatus.RUNNING})


class Recovery:
    """The adoption loop of one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def run(self) -> None:
        """Scan for expired leases every half lease period; runs until cancelled."""
        interval = max(self.engine.lease_seconds / 2, 0.05)
        while True:
            reraise_if_cancelled()
            try:
                await self.scan()
            except Exception:
                reraise_if_cancelled()
                logger.debug("recovery scan failed; will retry", exc_info=True)
            await asyncio.sleep(interval)

    async def scan(self) -> int:
        """Adopt what the expired leases hold now; return how many tasks were adopted.

        A lease counts as dead only once it has been expired for a further
        ``lease_seconds``: a live instance whose heartbeat is merely late (a busy
        connection pool, a long GC pause) keeps its tasks.
        """
        engine = self.engine
        leases = await engine.availability.call(
            lambda: engine.control_backend.expired_leases(limit=100)
        )
        dead_before = engine.clock.now() - timedelta(seconds=engine.lease_seconds)
        adopted = 0
        for lease in leases:
            if lease.expires_at > dead_before:
                break  # oldest expiry first: the rest are younger still
            if await self.adopt(lease):
                adopted += 1
        return adopted

    async def adopt(self, lease: Lease) -> bool:
        """Take over one expired lease; True if a task changed hands."""
        engine = self.engine
        backend, me = engine.control_backend, engine.instance_id
        if lease.owner == me and lease.task_id in engine.leases.held:
            return False  # our own heartbeat is late; it will renew
        if not await backend.acquire_lease(
            lease.task_id, owner=me, lease_seconds=engine.lease_seconds
        ):
            return False  # another instance adopted it first
        record = await backend.get(lease.task_id)
        queued = False
        try:
            if record is None:
                await fail_unreadable(engine, backend, lease.task_id)
                return False
            if record.status.is_terminal:
                return False
            if record.status is TaskStatus.PENDING:
                logger.warning(
                    "adopting task %s (%s) of instance %s: it never started",
                    record.task_id,
                    record.func_name,
                    lease.owner,
                )
                await engine.requeue(record)
                queued = True
                return True
            error = f"instance {lease.owner} stopped while the task was running"
            if record.cancel_requested:  # cancel() had reached it: final (cancellation.py)
                return await cancel_adopted(engine, backend, record, error)
            if record.requeue_on_interrupt:
                moved = await backend.transition(
                    record.task_id,
                    expected=_RUNNING,
                    new=TaskStatus.PENDING,
                    update=TaskUpdate(error=error, owner=None),
                )
                if moved is not None:
                    logger.warning("re-running task %s: %s", record.task_id, error)
                    await engine.emit_lifecycle(moved)
                    await engine.requeue(moved)
                    queued = True
            else:
                moved = await backend.transition(
                    record.task_id,
                    expected=_RUNNING,
                    new=TaskStatus.INTERRUPTED,
                    update=TaskUpdate(error=error, finished_at=engine.clock.now()),
                )
                if moved is not None:
                    logger.warning("task %s INTERRUPTED: %s", record.task_id, error)
                    await engine.emit_lifecycle(moved)
            return moved is not None
        finally:
            if not queued:
                await backend.release_lease(lease.task_id, owner=me)
            # A queued task keeps the adoption lease: a claim (maybe by this very
            # instance) replaces it, and releasing it here could delete the claimer's
            # lease. Unclaimed, it expires and the task is queued again, harmlessly.
