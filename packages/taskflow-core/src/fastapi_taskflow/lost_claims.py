"""Finding the tasks a claim took when its reply was lost.

A queue worker's ``claim(n)`` is one atomic step in the store: it takes tasks off the
queue and makes this instance their owner (they stay PENDING). If that step is applied
but its reply never arrives (the connection drops after the commit, the server restarts
right then), the worker sees an error and never learns which tasks it took. They are
then PENDING, owned by a *live* instance and on no queue: recovery adopts only the tasks
of dead instances, and no claim will ever hand them out again. So after any failed claim
the worker arms a :class:`LostClaims` sweep of its queue, which runs after its next
successful claim (the store answers again) and hands back, as claims, the tasks that
only such a lost claim can explain. This works on every backend, with the ``Store`` and
``Backend`` calls every backend has (the Redis backend also hands such tasks back by
itself, in its next claim; the sweep then finds nothing left to do).

Which tasks? The ids of this instance's active tasks come from ``Store.owned`` (paged).
A task is taken for lost only if all of these hold:

1. this instance does not hold it in process (``held``, asked again after every read
   of the store, since the sweep awaits between its steps): in the write buffer, running,
   claimed by the worker (its active set), accepted here for a container (a background
   list or an eager start runs it: the sweep never takes those), accepted here for a
   queue but not put on it yet, or between a store write and the enqueue that follows
   it (recovery's adopt and re-enqueue, arming a schedule's firing, a requeue), or left
   on a queue with a later due time that could not be released. ``Engine.holds`` says
   which;
2. its record is PENDING, owned by this instance, of this worker's queue;
3. it is not on the queue: ``Backend.dequeue`` answers False. A task waiting there
   (accepted here and submitted, adopted by recovery and queued, a periodic firing)
   is put straight back (``enqueue`` with its priority, due now). That is its due time:
   a retry or a firing due later is released from this instance when it is queued
   (``Engine.requeue``, ``arming``), and one whose release failed is held (point 1) and
   never probed. The one owned task left on a queue with a later time on purpose, a
   claimed task this instance lacks the function for (``rehydrate``), was due already;
   its wait only spaces out the instances that cannot run it. Nothing this instance
   holds on a queue is thereby run early, or run by the sweep;
4. read again after the dequeue, it is still PENDING, this instance's, and not held (a
   claim by another instance between the first read and the dequeue shows here).

What passes is handed to the worker as a :class:`~fastapi_taskflow.models.Claim` and
runs as a claimed task does (``Engine.run_claimed``: the invocation held here, or one
rebuilt from the stored record). It starts through the PENDING → RUNNING
compare-and-set like every run, so a task found twice, or found while something else
starts it, still runs at most once.

Not covered: a task this instance left on a queue with a later due time in an earlier
life under the same fixed ``instance_id`` whose release failed (point 3 then makes it
due at once). Cost: one ``owned`` listing plus one read per active task of this
instance not held in process, and a dequeue and an enqueue per such task still waiting
on this queue, once per failed claim (not per failure: the sweep runs when the store
answers again).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .models import Claim, TaskRecord, TaskStatus
from .protocols import TaskBackend

__all__ = ["LostClaims"]

logger = logging.getLogger("fastapi_taskflow")

_PAGE = 100


class LostClaims:
    """The lost-claim sweep of one queue worker (see the module docstring)."""

    def __init__(
        self,
        queue: str,
        *,
        owner: str,
        backend: Callable[[], TaskBackend],
        held: Callable[[str], bool],
    ) -> None:
        """``owner``: this instance's id; ``backend()``: the store of the worker's loop;
        ``held(task_id)``: whether the engine holds the task in process (the worker adds
        its own active set when it sweeps)."""
        self.queue = queue
        self.owner = owner
        self._backend = backend
        self._held = held
        self.armed = False
        """True after a failed claim, until a sweep completes."""

    def arm(self) -> None:
        """A claim failed: it may have taken tasks whose ids never arrived."""
        self.armed = True

    async def sweep(self, held: Callable[[str], bool]) -> list[Claim]:
        """Return the tasks of this queue that a lost claim took (see the module
        docstring); ``held`` adds what the caller holds (the worker's active set).

        Disarms when it completes; if a store call fails the sweep stays armed and the
        error propagates (the next successful claim sweeps again).
        """

        def holds(task_id: str) -> bool:
            return held(task_id) or self._held(task_id)

        backend = self._backend()
        found: list[Claim] = []
        seen: set[str] = set()
        limit = _PAGE
        while True:
            # ``owned`` lists the oldest first and has no offset: a larger page holds
            # every task of the smaller one that is still active.
            task_ids = await backend.owned(self.owner, limit=limit)
            for task_id in task_ids:
                if task_id in seen:
                    continue
                seen.add(task_id)
                claim = await self._lost(backend, task_id, holds)
                if claim is not None:
                    found.append(claim)
            if len(task_ids) < limit:
                break
            limit *= 2
        self.armed = False
        if found:
            logger.warning(
                "queue %r: %d task(s) were claimed by this instance in a call whose reply "
                "was lost; running them now",
                self.queue,
                len(found),
            )
        return found

    def _ours(self, record: TaskRecord | None) -> bool:
        return (
            record is not None
            and record.status is TaskStatus.PENDING
            and record.owner == self.owner
            and record.queue == self.queue
        )

    async def _lost(
        self, backend: TaskBackend, task_id: str, holds: Callable[[str], bool]
    ) -> Claim | None:
        """The claim of ``task_id`` if only a lost claim explains its state, else None."""
        if holds(task_id):
            return None
        record = await backend.get(task_id)
        if not self._ours(record) or holds(task_id):
            return None
        assert record is not None
        if await backend.dequeue(task_id, queue=self.queue):
            # Waiting on its queue: not lost. Put it back (it was due: see point 3).
            await backend.enqueue(task_id, queue=self.queue, priority=record.priority)
            return None
        record = await backend.get(task_id)
        if not self._ours(record) or holds(task_id):
            return None
        assert record is not None
        return Claim(task_id=task_id, queue=self.queue, priority=record.priority)
