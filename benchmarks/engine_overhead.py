"""In-process overhead of a managed task, as a ratio to plain ``BackgroundTasks``.

Both sides run the same no-op async function N times through the request-style path:
``add_task()`` then awaiting the background list, as Starlette does after a response.
Reported as µs per task and as a ratio against the plain baseline measured in the same
run (DESIGN.md target: <= 3x plain). Also: a task that fails twice then succeeds.

    python benchmarks/engine_overhead.py [--tasks 20000] [--backend memory://]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from fastapi import BackgroundTasks

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager


async def noop() -> None:
    return None


async def plain(n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        tasks = BackgroundTasks()
        tasks.add_task(noop)
        await tasks()
    return (time.perf_counter() - start) / n


async def managed(n: int, backend: str) -> float:
    tm = TaskManager(backend=backend)
    job = tm.task()(noop)
    async with tm:
        start = time.perf_counter()
        for _ in range(n):
            tasks = ManagedBackgroundTasks(tm)
            tasks.add_task(job)
            await tasks()
        elapsed = time.perf_counter() - start
    return elapsed / n


async def flaky(n: int, backend: str) -> float:
    tm = TaskManager(backend=backend, poll_interval=0.001)
    failures: dict[int, int] = {}

    @tm.task(retries=2)
    async def fails_twice(i: int) -> None:
        failures[i] = failures.get(i, 0) + 1
        if failures[i] < 3:
            raise RuntimeError("not yet")

    async with tm:
        start = time.perf_counter()
        ids = [tm.add_task(fails_twice, i) for i in range(n)]
        while True:
            stats = await tm.store.astats()
            if stats.by_status.get("success", 0) == n:  # type: ignore[call-overload]
                break
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - start
    assert len(ids) == n
    return elapsed / n


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--backend", default="memory://")
    args = parser.parse_args()
    n = args.tasks
    await plain(1000)  # warm up
    base = await plain(n)
    ours = await managed(n, args.backend)
    retry = await flaky(max(n // 10, 100), args.backend)
    print(f"backend: {args.backend}, tasks: {n}")
    print(f"plain BackgroundTasks      {base * 1e6:8.1f} µs/task   1.0x")
    print(f"ManagedBackgroundTasks     {ours * 1e6:8.1f} µs/task  {ours / base:5.1f}x")
    print(f"fails twice, then succeeds {retry * 1e6:8.1f} µs/task  {retry / base:5.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
