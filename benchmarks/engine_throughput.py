"""End-to-end tasks/s through the engine on each backend, with every transition durable.

Each task goes the request way: ``add_task()`` on a ``ManagedBackgroundTasks``, the
buffered record flushed, then the background list awaited (lease, PENDING → RUNNING →
SUCCESS, lease released) — ``--concurrency`` requests at a time. The memory backend run
is the baseline the others are reported against.

    python benchmarks/engine_throughput.py [--tasks 2000] [--concurrency 50]
        [--backends memory://,sqlite:///{tmp}/bench.db,postgresql://...,redis://...]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager, TaskStatus

DEFAULT_BACKENDS = ",".join(
    [
        "memory://",
        "sqlite:///{tmp}/bench.db",
        "postgresql://postgres@127.0.0.1:5432/test?schema=bench_{uid}",
        "redis://127.0.0.1:6379/0?prefix=bench{uid}",
    ]
)


async def noop(n: int) -> int:
    return n


async def run(url: str, tasks: int, concurrency: int) -> float:
    tm = TaskManager(backend=url)  # the defaults (events published on shared stores)
    job = tm.task(name="bench.noop")(noop)
    sem = asyncio.Semaphore(concurrency)

    async def request(i: int) -> None:
        async with sem:
            managed = ManagedBackgroundTasks(tm)
            managed.add_task(job, i)
            await tm._engine.flush()  # what install()'s middleware does per request
            await managed()

    async with tm:
        await asyncio.gather(*(request(i) for i in range(min(50, tasks))))  # warm up
        start = time.perf_counter()
        await asyncio.gather(*(request(i) for i in range(tasks)))
        elapsed = time.perf_counter() - start
        stats = await tm.store.astats()
    assert stats.by_status.get(TaskStatus.SUCCESS, 0) >= tasks
    await _drop(url)
    return tasks / elapsed


async def _drop(url: str) -> None:
    """Remove what the run left on a shared server (its schema or key prefix)."""
    if url.startswith("postgresql://") and "schema=" in url:
        import asyncpg

        conn = await asyncpg.connect(url.split("?")[0].replace("postgresql://", "postgres://"))
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{url.split("schema=")[1]}" CASCADE')
        finally:
            await conn.close()
    elif url.startswith("redis://") and "prefix=" in url:
        import redis.asyncio as redis

        client = redis.Redis.from_url(url.split("?")[0])
        prefix = url.split("prefix=")[1]
        keys = [k async for k in client.scan_iter(match=f"{{{prefix}}}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--backends", default=DEFAULT_BACKENDS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results: list[tuple[str, float]] = []
        for raw in args.backends.split(","):
            url = raw.replace("{tmp}", tmp).replace("{uid}", uuid.uuid4().hex[:8])
            try:
                rate = await run(url, args.tasks, args.concurrency)
            except Exception as exc:  # a server that is not running here
                print(f"{raw}: skipped ({type(exc).__name__}: {exc})")
                continue
            results.append((raw.split("?")[0], rate))
    if not results:
        return
    base = results[0][1]
    print(f"tasks: {args.tasks}, concurrency: {args.concurrency}")
    for name, rate in results:
        print(f"{name:45s} {rate:9.0f} tasks/s   {rate / base:6.3f}x of {results[0][0]}")


if __name__ == "__main__":
    asyncio.run(main())
