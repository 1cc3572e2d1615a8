"""The competitor: fastapi-taskflow 0.12.1 (PyPI), run in a virtualenv of its own
(its import name, ``fastapi_taskflow``, is the same as ours)."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
import uuid
from typing import Any

from bench_common import drive_http, in_flight, rss_mb, timer
from fastapi import BackgroundTasks, FastAPI

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager, TaskStatus


async def noop(*_: Any) -> None:
    return None


def noop_sync(*_: Any) -> None:
    return None


def _check(tm: Any, ids: list[str]) -> None:
    bad = [i for i in ids if tm.store.get(i).status is not TaskStatus.SUCCESS]
    if bad:
        raise AssertionError(f"{len(bad)} of {len(ids)} tasks did not end SUCCESS")


async def s1(tasks: int, sync: bool = False, backend: str = "memory") -> float:
    """µs per task: ``tasks`` no-op tasks in one container, run to terminal
    (``backend="sqlite"``: its SQLite snapshots, written per finished task)."""
    folder = tempfile.mkdtemp(prefix="competitor-bench-") if backend == "sqlite" else None
    try:
        tm = TaskManager(snapshot_db=f"{folder}/tasks.db") if folder else TaskManager()
        job = tm.task()(noop_sync if sync else noop)
        await tm.startup()
        try:
            container = ManagedBackgroundTasks(tm)
            with timer(cpu=folder is None) as t:
                ids = [container.add_task(job) for _ in range(tasks)]
                await container()
            _check(tm, ids)
        finally:
            await tm.shutdown()
    finally:
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
    return t.seconds / tasks * 1e6


async def s2(requests: int, inflight: int) -> float:
    """req/s: POSTs that each add one no-op task (``install()``ed app)."""
    app = FastAPI()
    tm = TaskManager()
    job = tm.task()(noop)
    tm.install(app)

    @app.post("/jobs")
    async def create(background_tasks: BackgroundTasks) -> dict[str, Any]:
        return {"task_id": background_tasks.add_task(job)}

    await tm.startup()
    try:
        return await drive_http(app, requests, inflight, cpu=True)
    finally:
        await tm.shutdown()


async def s3(tasks: int) -> float:
    """µs per task: each fails twice then succeeds (retries=2, delay=0)."""
    failures: dict[int, int] = {}
    tm = TaskManager()

    @tm.task(retries=2, delay=0.0)
    async def fails_twice(i: int) -> None:
        failures[i] = failures.get(i, 0) + 1
        if failures[i] < 3:
            raise RuntimeError("not yet")

    await tm.startup()
    try:
        container = ManagedBackgroundTasks(tm)
        with timer(cpu=True) as t:
            ids = [container.add_task(fails_twice, i) for i in range(tasks)]
            await container()
        _check(tm, ids)
    finally:
        await tm.shutdown()
    return t.seconds / tasks * 1e6


async def e(tasks: int, concurrency: int) -> float:
    """tasks/s: ``concurrency`` request-like containers in flight, one task each."""
    tm = TaskManager()
    job = tm.task()(noop)

    async def request(i: int) -> None:
        container = ManagedBackgroundTasks(tm)
        container.add_task(job, i)
        await container()

    await tm.startup()
    try:
        await in_flight(50, concurrency, request)
        with timer(cpu=True) as t:
            await in_flight(tasks, concurrency, request)
    finally:
        await tm.shutdown()
    return tasks / t.seconds


async def idem(rows: int, calls: int = 200) -> float:
    """ms per idempotent ``add_task()`` (a new key) with ``rows`` tasks in its store
    (in memory: its key check scans the records there)."""
    tm = TaskManager()
    job = tm.task()(noop)
    for n in range(rows):
        record = tm.store.create(f"bench{n:09d}", "noop", (), {}, idempotency_key=f"key{n}")
        record.status = TaskStatus.SUCCESS
    samples = []
    container = ManagedBackgroundTasks(tm)
    for i in range(calls + 20):
        key = f"new-{uuid.uuid4().hex}"
        started = time.perf_counter()
        container.add_task(job, idempotency_key=key)
        if i >= 20:
            samples.append(time.perf_counter() - started)
    await container()
    return statistics.median(samples) * 1e3


async def rss(tasks: int) -> float:
    """MiB the process grew by after ``tasks`` finished tasks."""
    tm = TaskManager()
    job = tm.task()(noop)
    await tm.startup()
    try:
        before = rss_mb()
        for start in range(0, tasks, 1000):
            container = ManagedBackgroundTasks(tm)
            for _ in range(min(1000, tasks - start)):
                container.add_task(job)
            await container()
        return rss_mb() - before
    finally:
        await tm.shutdown()
