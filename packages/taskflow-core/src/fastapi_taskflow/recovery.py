"""Adopting the tasks of instances that died.

Every instance with a durable backend reads the heartbeats and the owners of active tasks
once per beat interval; ``liveness.DeathWatch`` says which owners are dead. The tasks of
a dead owner are adopted one by one, each by a compare-and-set of its owner (of several
instances adopting at once, one wins each task):

* PENDING (accepted, never started): put on its queue, where exactly one instance
  claims and runs it (the PENDING → RUNNING compare-and-set admits one);
* RUNNING (the owner died mid-run): INTERRUPTED, or — for tasks registered with
  ``requeue_on_interrupt=True`` — PENDING again and queued (at least once); CANCELLED
  when a cancel request had reached it;
* a record that cannot be read (corrupt): FAILED.

Once a dead owner holds nothing its heartbeat is deleted. Running a queued task needs its
function: an instance that does not have the task's name registered puts it back on the
queue for one that does, and logs a warning once.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import TYPE_CHECKING

from .errors import BackendUnavailableError
from .liveness import DeathWatch, beat_interval
from .models import TaskRecord, TaskStatus, TaskUpdate
from .protocols import TaskBackend
from .redaction import mask_secrets
from .rehydrate import fail_unreadable
from .runtime import Runtime, reraise_if_cancelled, within

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["Recovery", "cancel_adopted", "start_recovery"]

logger = logging.getLogger("fastapi_taskflow")

_RUNNING = frozenset({TaskStatus.RUNNING})
_PAGE = 100


class Recovery:
    """The adoption loop of one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.watch = DeathWatch(engine.instance_id, engine.liveness_seconds)
        self._reported: set[str] = set()

    async def run(self) -> None:
        """Scan once per beat interval; runs until cancelled.

        A failed read of the heartbeats restarts the watch (nothing was observed); an
        outage is logged at debug level (``Availability`` reports outages), any other
        failure as a warning once per kind, since it stops adoption until it is fixed.
        """
        interval = beat_interval(self.engine.liveness_seconds)
        while True:
            reraise_if_cancelled()
            try:
                await self.scan()
            except (BackendUnavailableError, TimeoutError):
                reraise_if_cancelled()
                logger.debug("recovery scan: store unreachable; will retry", exc_info=True)
            except Exception as exc:
                reraise_if_cancelled()
                self._report(exc)
            await asyncio.sleep(interval)

    def _report(self, exc: Exception) -> None:
        kind = type(exc).__name__
        if kind in self._reported:
            logger.debug("recovery scan failed again", exc_info=True)
            return
        self._reported.add(kind)
        logger.warning(
            "adopting the tasks of dead instances failed (%s); will retry",
            mask_secrets(f"{kind}: {exc}"),
            exc_info=True,
        )

    async def scan(self) -> int:
        """Read the heartbeats and owners, adopt what dead owners hold; return how many
        tasks changed hands."""
        engine = self.engine
        control = engine.control_backend

        async def read() -> tuple[dict[str, datetime], set[str]]:
            heartbeats = await engine.availability.call(control.heartbeats)
            return heartbeats, await engine.availability.call(control.owners)

        try:
            heartbeats, owners = await within(max(engine.liveness_seconds / 2, 0.1), read())
        except Exception:
            self.watch.lost_contact()  # nothing seen: the evidence starts again
            raise
        adopted = 0
        for dead in self.watch.observe(heartbeats, owners):
            adopted += await self.adopt_all(dead)
        return adopted

    async def adopt_all(self, dead: str) -> int:
        """Adopt every active task of the dead instance ``dead``, then delete its
        heartbeat; return how many tasks changed hands."""
        control = self.engine.control_backend
        adopted = 0
        while True:
            task_ids = await control.owned(dead, limit=_PAGE)
            if not task_ids:
                break
            moved = [await self.adopt(dead, task_id) for task_id in task_ids]
            adopted += sum(moved)
            if len(task_ids) < _PAGE:
                break
        if not await control.owned(dead, limit=1):
            await control.forget_instance(dead)
            self.watch.forget(dead)
        return adopted

    async def adopt(self, dead: str, task_id: str) -> bool:
        """Take over one task of the dead instance ``dead``; True if it changed hands.

        The task is held in process (``Engine.holding``) from before the adopt to after
        its re-enqueue: in between it is PENDING, this instance's and on no queue, which
        a lost-claim sweep of this instance must not mistake for a lost claim."""
        with self.engine.holding(task_id):
            return await self._adopt(dead, task_id)

    async def _adopt(self, dead: str, task_id: str) -> bool:
        engine = self.engine
        backend = engine.control_backend
        record = await backend.adopt(task_id, owner=dead, new_owner=engine.instance_id)
        if record is None:
            if await backend.get(task_id) is None:
                await fail_unreadable(engine, backend, task_id)  # corrupt: end it
            return False  # another instance adopted it first, or it finished
        if record.status is TaskStatus.PENDING:
            logger.warning(
                "adopting task %s (%s) of instance %s: it never started",
                record.task_id,
                record.func_name,
                dead,
            )
            await engine.requeue(record)
            return True
        return await self._adopt_running(dead, record)

    async def _adopt_running(self, dead: str, record: TaskRecord) -> bool:
        engine = self.engine
        backend = engine.control_backend
        error = f"instance {dead} stopped while the task was running"
        if record.cancel_requested:  # cancel() had reached it: final (cancellation.py)
            return await cancel_adopted(engine, backend, record, error)
        if record.requeue_on_interrupt:
            moved = await backend.transition(
                record.task_id,
                expected=_RUNNING,
                new=TaskStatus.PENDING,
                update=TaskUpdate(error=error),
            )
            if moved is not None:
                logger.warning("re-running task %s: %s", record.task_id, error)
                await engine.emit_lifecycle(moved)
                await engine.requeue(moved)
            return moved is not None
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


async def cancel_adopted(
    engine: Engine, backend: TaskBackend, record: TaskRecord, error: str
) -> bool:
    """Recovery of a RUNNING task whose instance died after ``cancel()`` reached it:
    ``CANCELLED`` (never INTERRUPTED, never run again). True if this call moved it."""
    moved = await backend.transition(
        record.task_id,
        expected={TaskStatus.RUNNING},
        new=TaskStatus.CANCELLED,
        update=TaskUpdate(
            finished_at=engine.clock.now(),
            error=f"TaskCancelledError: cancel requested; {error}",
        ),
    )
    if moved is not None:
        await engine.emit_lifecycle(moved)
    return moved is not None


def start_recovery(engine: Engine, runtime: Runtime) -> None:
    """Start hook: on a durable backend, run the adoption loop of ``engine``."""
    if engine.durable:
        runtime.spawn(Recovery(engine).run(), name="taskflow-recovery")
