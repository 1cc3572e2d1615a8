"""The floor: FastAPI's own ``BackgroundTasks``, no task manager."""

from __future__ import annotations

from typing import Any

from bench_common import drive_http, in_flight, rss_mb, timer
from fastapi import BackgroundTasks, FastAPI


async def noop(*_: Any) -> None:
    return None


def noop_sync(*_: Any) -> None:
    return None


async def s1(tasks: int, sync: bool = False) -> float:
    """µs per task: ``tasks`` no-op tasks in one container, run to the end."""
    container = BackgroundTasks()
    func = noop_sync if sync else noop
    with timer(cpu=True) as t:
        for _ in range(tasks):
            container.add_task(func)
        await container()
    return t.seconds / tasks * 1e6


async def s1_cap(tasks: int, per_container: int) -> float:
    """µs per task: ``tasks`` no-op tasks, ``per_container`` to a container (plain
    keeps nothing, so there is no cap to be at)."""
    with timer(cpu=True) as t:
        for _ in range(tasks // per_container):
            container = BackgroundTasks()
            for _ in range(per_container):
                container.add_task(noop)
            await container()
    return t.seconds / tasks * 1e6


async def s2(requests: int, inflight: int) -> float:
    """req/s: POSTs that each add one no-op task."""
    app = FastAPI()

    @app.post("/jobs")
    async def create(background_tasks: BackgroundTasks) -> dict[str, Any]:
        background_tasks.add_task(noop)
        return {"task_id": None}

    return await drive_http(app, requests, inflight, cpu=True)


async def s3(tasks: int) -> float:
    """µs per task: each fails twice then succeeds, retried by a hand-written loop."""
    failures: dict[int, int] = {}

    async def fails_twice(i: int) -> None:
        failures[i] = failures.get(i, 0) + 1
        if failures[i] < 3:
            raise RuntimeError("not yet")

    async def with_retries(i: int) -> None:
        for attempt in range(3):
            try:
                await fails_twice(i)
                return
            except Exception:
                if attempt == 2:
                    raise

    container = BackgroundTasks()
    with timer(cpu=True) as t:
        for i in range(tasks):
            container.add_task(with_retries, i)
        await container()
    assert all(n == 3 for n in failures.values()) and len(failures) == tasks
    return t.seconds / tasks * 1e6


async def e(tasks: int, concurrency: int) -> float:
    """tasks/s: ``concurrency`` request-like containers in flight, one task each."""

    async def request(i: int) -> None:
        container = BackgroundTasks()
        container.add_task(noop, i)
        await container()

    await in_flight(50, concurrency, request)
    with timer(cpu=True) as t:
        await in_flight(tasks, concurrency, request)
    return tasks / t.seconds


async def rss(tasks: int) -> float:
    """MiB the process grew by after ``tasks`` finished tasks."""
    before = rss_mb()
    for start in range(0, tasks, 1000):
        container = BackgroundTasks()
        for _ in range(min(1000, tasks - start)):
            container.add_task(noop)
        await container()
    return rss_mb() - before
