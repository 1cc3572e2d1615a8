"""Group commit for SQLite: one writer task per backend that batches write operations.

SQLite allows one writer at a time and every COMMIT costs an fsync. The writer takes
every write operation that arrived while the previous transaction was committing (up to
``max_batch``), runs them one after another in a single ``BEGIN IMMEDIATE`` transaction
and commits once, so a burst of creates and transitions costs a few fsyncs instead of
one each.

Correctness: each caller gets its own result (or its own exception) only after the
COMMIT that made its change durable. When one operation of a batch raises, the whole
transaction is rolled back and every operation of the batch is run again alone, in its
own transaction, so one bad operation never fails or loses its neighbours' writes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi_taskflow.errors import BackendUnavailableError

__all__ = ["SQLiteWriter"]

_MAX_YIELDS = 32
_IDLE_YIELDS = 3

BatchRunner = Callable[[Sequence[Any], "int | None"], Awaitable[list[Any]]]
"""Runs operations in one transaction; the second argument is how many rows they write
at most, or None when not known."""

_Item = tuple[Any, "asyncio.Future[Any]", "int | None"]


class SQLiteWriter:
    """Runs write operations in batched transactions on one asyncio task.

    Args:
        run_batch: runs a list of operations in one transaction and returns their
            results in order, or raises (then nothing was committed); it is told how
            many rows the batch writes at most, when every operation said.
        max_batch: the most operations one transaction holds.
        window: seconds to wait for more operations before starting a transaction that
            is not full (0: only what already arrived is batched, adding no latency).
    """

    def __init__(self, run_batch: BatchRunner, *, max_batch: int = 512, window: float = 0.0):
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._window = window
        self._pending: deque[_Item] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.batches = 0
        """How many transactions were committed (for tests and metrics)."""

    def start(self) -> None:
        """Start the writer task on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name="taskflow-sqlite-writer"
            )

    async def submit(self, op: Any, rows: int | None = None) -> Any:
        """Run ``op`` in the next batch; return its result once committed. ``rows``:
        how many rows ``op`` writes at most, when known."""
        return (await self.submit_many([op], rows))[0]

    async def submit_many(self, ops: Sequence[Any], rows: int | None = None) -> list[Any]:
        """Run ``ops`` (in order, in as few batches as fit); return their results.

        ``rows`` (how many rows they write at most, when known) is kept for a single
        operation only. Raises the first operation's exception, if any, after all
        have finished.
        """
        if self._closing or self._task is None:
            raise BackendUnavailableError(
                "the SQLite backend is not open (call 'await backend.open()' first, and do "
                "not use it after 'close()')"
            )
        loop = asyncio.get_running_loop()
        futures = []
        weight = rows if len(ops) == 1 else None
        for op in ops:
            future: asyncio.Future[Any] = loop.create_future()
            self._pending.append((op, future, weight))
            futures.append(future)
        self._wake.set()
        if len(futures) == 1:
            return [await futures[0]]
        results = await asyncio.gather(*futures, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return list(results)

    async def stop(self) -> None:
        """Finish the operations already submitted, then stop the writer task.

        A writer task that was cancelled already (its event loop ending: every task is
        cancelled before the loop's async generators close the backend) is taken as
        stopped."""
        self._closing = True
        self._wake.set()
        task = self._task
        if task is not None:
            await asyncio.wait([task])
            if not task.cancelled():
                task.result()  # what the writer task raised, if anything

    async def _loop(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._window and len(self._pending) < self._max_batch and not self._closing:
                await asyncio.sleep(self._window)
            batch = [
                self._pending.popleft() for _ in range(min(self._max_batch, len(self._pending)))
            ]
            live = [item for item in batch if not item[1].cancelled()]
            if live:
                await self._run(live)
                await self._let_callers_submit()

    async def _let_callers_submit(self) -> None:
        """Yield to the event loop until the callers just answered stop submitting.

        A caller woken by a commit usually writes again a few steps later (the next
        transition of its task). Taking the next batch at once would start a
        transaction holding only what arrived during the last commit, and everyone
        else would wait a whole commit for the one after: batches would stay tiny.
        Letting the ready callbacks run first (no timer, so no latency when idle)
        keeps batches as large as the load.
        """
        idle = 0
        for _ in range(_MAX_YIELDS):
            before = len(self._pending)
            if before >= self._max_batch:
                return
            await asyncio.sleep(0)
            idle = idle + 1 if len(self._pending) == before else 0
            if idle >= _IDLE_YIELDS:
                return

    async def _run(self, batch: list[_Item]) -> None:
        weights = [weight for _, _, weight in batch]
        rows = None if None in weights else sum(w for w in weights if w is not None)
        try:
            results = await self._run_batch([op for op, _, _ in batch], rows)
        except asyncio.CancelledError:
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(BackendUnavailableError("the SQLite writer stopped"))
            raise
        except Exception:
            if len(batch) == 1:
                await self._run_alone(batch[0])
            else:
                for item in batch:
                    await self._run_alone(item)
            return
        self.batches += 1
        for (_, future, _), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _run_alone(self, item: _Item) -> None:
        op, future, rows = item
        try:
            (result,) = await self._run_batch([op], rows)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        self.batches += 1
        if not future.done():
            future.set_result(result)
