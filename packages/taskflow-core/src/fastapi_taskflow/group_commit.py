"""Group commit of status changes: the starts and finishes of many tasks in one write.

On a durable backend every task starts with a PENDING → RUNNING compare-and-set and
ends with RUNNING → (SUCCESS, FAILED, ...). Written one by one, each costs a round trip
and a commit. Here the changes requested during one turn of the event loop are written
together with one :meth:`~fastapi_taskflow.protocols.Store.transition_many`; while that
write is in flight, the next batch gathers. A caller's ``await`` returns only once its
change is committed (or refused), so no task starts, and no outcome is reported, before
the write that guarantees it.

If the batch fails because the store is unreachable, every caller gets that error (and
retries through ``Availability``, as for a single write). Any other failure of the batch
(one record the store refuses) is retried item by item, so one bad outcome fails alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .errors import BackendUnavailableError
from .models import TaskRecord, Transition
from .protocols import Store
from .runtime import reraise_if_cancelled

__all__ = ["TransitionBatcher"]

logger = logging.getLogger("fastapi_taskflow")

_Waiter = asyncio.Future[TaskRecord | None]

GATHER_TURNS = 2
"""Event-loop turns a write waits for more changes before it takes its batch."""


class TransitionBatcher:
    """Collects compare-and-sets on one event loop and writes them in batches."""

    def __init__(
        self,
        store: Store,
        loop: asyncio.AbstractEventLoop,
        slot: Callable[[], asyncio.Lock] | None = None,
    ) -> None:
        """``slot()`` is a lock held around each write, shared with the engine's other
        batched writes (the creates of the write buffer)."""
        self.store = store
        self.loop = loop
        self._slot = slot or asyncio.Lock
        self._batch: list[tuple[Transition, _Waiter]] = []
        self._writing = False
        self._kick_scheduled = False
        self.batches_written = 0
        """How many ``transition_many`` calls were made (for tests and benchmarks)."""

    async def transition(self, change: Transition) -> TaskRecord | None:
        """Apply ``change`` with the next batch; return what ``Store.transition`` would."""
        waiter: _Waiter = self.loop.create_future()
        self._batch.append((change, waiter))
        if not self._writing and not self._kick_scheduled:
            self._kick_scheduled = True
            self.loop.call_soon(self._kick)
        return await waiter

    def _kick(self) -> None:
        self._kick_scheduled = False
        if self._writing or not self._batch:
            return
        self._writing = True
        self.loop.create_task(self._write(), name="taskflow-group-commit")

    async def _write(self) -> None:
        try:
            # Let the tasks that are a step behind this one ask too: without this, the
            # first change of a burst goes alone, the rest wait for it, and under load
            # the writes fall into lock step with one or two changes each.
            async with self._slot():
                for _ in range(GATHER_TURNS):
                    await asyncio.sleep(0)
                batch, self._batch = _distinct(self._batch)
                await self._write_batch(batch)
        finally:
            self._writing = False
            self._kick()

    async def _write_batch(self, batch: list[tuple[Transition, _Waiter]]) -> None:
        try:
            results = await self.store.transition_many([change for change, _ in batch])
            self.batches_written += 1
        except BackendUnavailableError as exc:
            for _, waiter in batch:
                _fail(waiter, exc)
            return
        except asyncio.CancelledError:
            for _, waiter in batch:
                waiter.cancel()
            raise
        except Exception:
            reraise_if_cancelled()
            logger.debug("a batch of status changes was refused; writing them one by one")
            await self._write_each(batch)
            return
        for (_, waiter), result in zip(batch, results, strict=True):
            if not waiter.done():
                waiter.set_result(result)

    async def _write_each(self, batch: list[tuple[Transition, _Waiter]]) -> None:
        for change, waiter in batch:
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


def _distinct(
    batch: list[tuple[Transition, _Waiter]],
) -> tuple[list[tuple[Transition, _Waiter]], list[tuple[Transition, _Waiter]]]:
    """Split ``batch`` into one change per task id (a store call takes distinct ids) and
    the rest, which waits for the next batch, in order."""
    seen: set[str] = set()
    now: list[tuple[Transition, _Waiter]] = []
    later: list[tuple[Transition, _Waiter]] = []
    for item in batch:
        task_id = item[0].task_id
        (later if task_id in seen else now).append(item)
        seen.add(task_id)
    return now, later


def _fail(waiter: _Waiter, exc: BaseException) -> None:
    if not waiter.done():
        waiter.set_exception(exc)
