"""Real concurrency for the suite: gathered calls plus forks on their own threads and loops."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import ClassVar, TypeVar

import anyio
import anyio.to_thread

from fastapi_taskflow.protocols import TaskBackend

from ._base import ConformanceBase

__all__ = ["RacingBase", "contend"]

T = TypeVar("T")


async def contend(
    backend: TaskBackend,
    work: Callable[[TaskBackend, int], Awaitable[T]],
    *,
    local: int,
    threads: int,
    per_thread: int,
    time_limit: float,
) -> list[T]:
    """Run ``work`` many times at once, the way several app instances would.

    ``local`` calls are gathered on ``backend`` in this event loop. Each of ``threads``
    threads runs its own event loop, opens a ``backend.fork()`` there, gathers
    ``per_thread`` calls on it and closes the fork. Everybody starts together behind a
    barrier. ``work(target, index)`` gets the backend to use and a unique index.

    Returns:
        Every call's result: the local ones first, then thread by thread.

    Raises:
        AssertionError: a thread did not finish within ``time_limit`` seconds.
        BaseException: the first error any call (or fork open/close) raised.
    """
    barrier = threading.Barrier(threads + 1)
    results: dict[int, list[T]] = {}
    errors: list[BaseException] = []

    def run_thread(number: int) -> None:
        async def main() -> list[T]:
            fork = backend.fork()
            await fork.open()
            try:
                barrier.wait(time_limit)
                first = local + number * per_thread
                return list(
                    await asyncio.gather(*(work(fork, first + j) for j in range(per_thread)))
                )
            finally:
                await fork.close()

        try:
            results[number] = asyncio.run(main())
        except BaseException as exc:  # reported by the caller
            errors.append(exc)
            barrier.abort()

    workers = [
        threading.Thread(target=run_thread, args=(n,), name=f"conformance-{n}", daemon=True)
        for n in range(threads)
    ]
    for worker in workers:
        worker.start()
    mine: list[T] = []
    try:
        await anyio.to_thread.run_sync(barrier.wait, time_limit)
        with anyio.fail_after(time_limit):
            mine = list(await asyncio.gather(*(work(backend, i) for i in range(local))))
    except threading.BrokenBarrierError:
        pass  # a thread failed before the start; its error is raised below
    finally:
        for worker in workers:
            await anyio.to_thread.run_sync(worker.join, time_limit)
    stuck = [worker.name for worker in workers if worker.is_alive()]
    assert not stuck, f"threads {stuck} did not finish in {time_limit}s: check for a deadlock"
    if errors:
        raise errors[0]
    return mine + [item for number in range(threads) for item in results[number]]


class RacingBase(ConformanceBase):
    """What the areas with race tests share: how many contenders, and :meth:`race`.

    ``local`` coroutines share the fixture's backend; each of ``threads`` threads opens
    a fork on its own event loop and runs ``per_thread`` coroutines on it. A backend's
    test class may lower these (a server with few connections) or raise them.
    """

    local: ClassVar[int] = 8
    threads: ClassVar[int] = 4
    per_thread: ClassVar[int] = 4

    async def race(
        self, backend: TaskBackend, work: Callable[[TaskBackend, int], Awaitable[T]]
    ) -> list[T]:
        """Run ``work(target, index)`` from every contender at once; see :func:`contend`."""
        return await contend(
            backend,
            work,
            local=self.local,
            threads=self.threads,
            per_thread=self.per_thread,
            time_limit=self.concurrency_timeout,
        )
