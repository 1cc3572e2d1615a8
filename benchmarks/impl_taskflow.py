"""taskflow (this checkout), through its public API only."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from bench_common import drive_http, in_flight, rss_mb, timer
from fastapi import BackgroundTasks, FastAPI

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager, TaskStatus
from taskflow_memory.store import DEFAULT_MAX_RECORDS

SERVERS = {
    "postgres": os.environ.get(
        "TASKFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    ),
    "mysql": os.environ.get("TASKFLOW_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
    "redis": os.environ.get("TASKFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
}


async def noop(*_: Any) -> None:
    return None


def noop_sync(*_: Any) -> None:
    return None


class Backend:
    """A fresh, isolated store of one kind (own file, schema, table or key prefix),
    removed again on exit."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        uid = uuid.uuid4().hex[:8]
        self.folder: str | None = None
        if kind == "memory":
            # Every record kept, so the run can check that every task succeeded (the
            # default keeps the newest 10,000 finished ones; the RSS scenario uses it).
            self.url = "memory://?max_records=100000000"
        elif kind == "sqlite":
            self.folder = tempfile.mkdtemp(prefix="taskflow-bench-")
            self.url = f"sqlite:///{self.folder}/bench.db"
        elif kind == "postgres":
            self.schema = f"tfbench_{uid}"
            self.url = f"{SERVERS['postgres']}?schema={self.schema}"
        elif kind == "mysql":
            self.prefix = f"tfb{uid}_"
            self.url = f"{SERVERS['mysql']}?table_prefix={self.prefix}"
        elif kind == "redis":
            self.prefix = f"tfbench{uid}"
            self.url = f"{SERVERS['redis']}?prefix={self.prefix}"
        else:
            raise ValueError(f"unknown backend {kind!r}")

    async def __aenter__(self) -> Backend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.drop()

    async def drop(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        elif self.kind in ("postgres", "mysql"):
            from sqlalchemy import text
            from sqlalchemy.ext.asyncio import create_async_engine

            from taskflow_sql.urls import parse_url

            engine = create_async_engine(parse_url(SERVERS[self.kind]).url)
            try:
                async with engine.begin() as conn:
                    if self.kind == "postgres":
                        await conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
                    else:
                        rows = await conn.execute(
                            text(
                                "SELECT table_name FROM information_schema.tables "
                                "WHERE table_schema = DATABASE() AND table_name LIKE :p"
                            ),
                            {"p": self.prefix.replace("_", "\\_") + "%"},
                        )
                        for (name,) in rows.all():
                            await conn.execute(text(f"DROP TABLE `{name}`"))
            finally:
                await engine.dispose()
        elif self.kind == "redis":
            import redis.asyncio as redis

            client = redis.Redis.from_url(SERVERS["redis"])
            try:
                keys = [k async for k in client.scan_iter(match=f"*{self.prefix}*", count=1000)]
                for start in range(0, len(keys), 1000):
                    await client.delete(*keys[start : start + 1000])
            finally:
                await client.aclose()


def manager(url: str, **options: Any) -> TaskManager:
    """A manager as a user makes one: the defaults, among them ``publish_events`` (on
    for shared stores: every event is published for the other instances)."""
    return TaskManager(backend=url, **options)


async def _check(tm: TaskManager, expected: int) -> None:
    stats = await tm.store.astats()
    done = stats.by_status.get(TaskStatus.SUCCESS, 0)
    if done < expected:
        raise AssertionError(f"only {done} of {expected} tasks ended SUCCESS: {stats}")


async def s1(tasks: int, sync: bool = False, backend: str = "memory") -> float:
    """µs per task: ``tasks`` no-op tasks in one container, run to terminal."""
    async with Backend(backend) as store:
        tm = manager(store.url)
        job = tm.task()(noop_sync if sync else noop)
        async with tm:
            container = ManagedBackgroundTasks(tm)
            with timer(cpu=backend == "memory") as t:
                for _ in range(tasks):
                    container.add_task(job)
                await container()
            await _check(tm, tasks)
    return t.seconds / tasks * 1e6


async def s1_cap(tasks: int, per_container: int) -> float:
    """µs per task: ``tasks`` no-op tasks, ``per_container`` to a container (a
    request's worth), on a memory store already holding as many finished tasks as its
    cap: the state of any process that has run that many, where every finished task
    makes the store drop its oldest."""
    tm = manager("memory://")
    job = tm.task()(noop)
    async with tm:
        filler = ManagedBackgroundTasks(tm)
        for _ in range(DEFAULT_MAX_RECORDS):
            filler.add_task(job)
        await filler()
        with timer(cpu=True) as t:
            for _ in range(tasks // per_container):
                container = ManagedBackgroundTasks(tm)
                for _ in range(per_container):
                    container.add_task(job)
                await container()
        await _check(tm, DEFAULT_MAX_RECORDS)
    return t.seconds / tasks * 1e6


async def s2(requests: int, inflight: int, backend: str = "memory") -> float:
    """req/s: POSTs that each add one no-op task (``install()``ed app)."""
    async with Backend(backend) as store:
        app = FastAPI()
        tm = manager(store.url)
        job = tm.task()(noop)
        tm.install(app)

        @app.post("/jobs")
        async def create(background_tasks: BackgroundTasks) -> dict[str, Any]:
            return {"task_id": background_tasks.add_task(job)}

        async with tm:
            rate = await drive_http(app, requests, inflight, cpu=backend == "memory")
            await _check(tm, requests)
    return rate


async def s3(tasks: int, backend: str = "memory") -> float:
    """µs per task: each fails twice then succeeds (retries=2, delay=0)."""
    failures: dict[int, int] = {}
    async with Backend(backend) as store:
        tm = manager(store.url)

        @tm.task(retries=2, delay=0)
        async def fails_twice(i: int) -> None:
            failures[i] = failures.get(i, 0) + 1
            if failures[i] < 3:
                raise RuntimeError("not yet")

        async with tm:
            container = ManagedBackgroundTasks(tm)
            with timer(cpu=backend == "memory") as t:
                for i in range(tasks):
                    container.add_task(fails_twice, i)
                await container()
                while (await tm.store.astats()).by_status.get(TaskStatus.SUCCESS, 0) < tasks:
                    await asyncio.sleep(0.002)
    return t.seconds / tasks * 1e6


async def e(tasks: int, concurrency: int, backend: str = "memory", stored: int = 0) -> float:
    """tasks/s: ``concurrency`` request-like containers in flight, one task each, no
    HTTP and no explicit flush (each task's run writes its record first). ``stored``:
    run on a store already holding that many finished tasks whose ids this
    implementation made, as weeks of use leave a task table (where a new task's id
    lands in the primary-key index depends on how ids are made)."""
    if stored:
        store = await _filled_store(backend, stored, own_ids=True)
        # the stored rows are old: keep them
        return await _e(tasks, concurrency, store, manager(store.url, retention=None))
    async with Backend(backend) as store:
        return await _e(tasks, concurrency, store, manager(store.url))


async def _e(tasks: int, concurrency: int, store: Backend, tm: TaskManager) -> float:
    job = tm.task(name="bench.noop")(noop)

    async def request(i: int) -> None:
        container = ManagedBackgroundTasks(tm)
        container.add_task(job, i)
        await container()

    async with tm:
        await in_flight(50, concurrency, request)
        before = (await tm.store.astats()).by_status.get(TaskStatus.SUCCESS, 0)
        with timer(cpu=store.kind == "memory") as t:
            await in_flight(tasks, concurrency, request)
        await _check(tm, before + tasks)
    return tasks / t.seconds


def _finished_rows(rows: int, start: Any, ids: Callable[[int], str] | None = None) -> Iterator[Any]:
    """``rows`` finished tasks, one a second from ``start``; ids ``bench000000042``
    unless ``ids(n)`` makes them."""
    from fastapi_taskflow.models import TaskRecord

    for n in range(rows):
        created = start + timedelta(seconds=n)
        yield TaskRecord(
            task_id=ids(n) if ids is not None else f"bench{n:09d}",
            func_name="bench.noop",
            status=TaskStatus.SUCCESS,
            args=[n],
            kwargs={},
            idempotency_key=f"key{n:09d}",
            attempt=1,
            created_at=created,
            updated_at=created,
            started_at=created,
            finished_at=created,
            result=None,
        )


def _own_task_id(_: int) -> str:
    """A task id as this implementation makes them (``task_ids`` since version-7 ids;
    earlier, ``models``)."""
    try:
        from fastapi_taskflow.task_ids import new_task_id
    except ImportError:  # an older taskflow (the "before" column)
        from fastapi_taskflow.models import new_task_id  # type: ignore[attr-defined,no-redef]
    return new_task_id()


_filled: dict[tuple[str, int, bool], Backend] = {}


async def _filled_store(backend: str, rows: int, own_ids: bool = False) -> Backend:
    """A store of ``backend`` holding ``rows`` finished tasks (bulk-loaded once per
    worker process, kept for later rounds, dropped when the worker exits); their ids
    are ``bench000000042`` (for ``get``), or with ``own_ids`` made as this
    implementation makes ids."""
    found = _filled.get((backend, rows, own_ids))
    if found is not None:
        return found
    from fastapi_taskflow.clock import SystemClock
    from taskflow_sql import SQLBackend, bulk_insert_tasks

    store = Backend(backend)
    clock = SystemClock()
    sql = SQLBackend(store.url, clock=clock)
    await sql.open()
    try:
        start = clock.now() - timedelta(days=30)
        ids = _own_task_id if own_ids else None
        await bulk_insert_tasks(sql, _finished_rows(rows, start, ids))
    finally:
        await sql.close()
    _filled[(backend, rows, own_ids)] = store
    return store


async def get(rows: int, backend: str, calls: int = 300) -> float:
    """ms per ``await task_manager.store.aget(id)`` of a random task among ``rows``."""
    import statistics
    import time

    store = await _filled_store(backend, rows)
    tm = manager(store.url, retention=None)  # the rows are old: keep them
    rng = random.Random(1)
    samples = []
    async with tm:
        for i in range(calls + 20):
            task_id = f"bench{rng.randrange(rows):09d}"
            started = time.perf_counter()
            record = await tm.store.aget(task_id)
            if i >= 20:
                samples.append(time.perf_counter() - started)
            assert record is not None
    return statistics.median(samples) * 1e3


async def idem(rows: int, backend: str, calls: int = 200) -> float:
    """ms per idempotent ``add_task()`` (a new key) in a store holding ``rows`` tasks."""
    import statistics
    import time

    store = await _filled_store(backend, rows)
    tm = manager(store.url, retention=None)  # the rows are old: keep them
    job = tm.task(name="bench.noop")(noop)
    samples = []
    async with tm:
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
    """MiB the process grew by after ``tasks`` finished tasks (memory backend, with its
    default cap of 10,000 kept records: what an app gets)."""
    tm = manager("memory://")
    job = tm.task()(noop)
    async with tm:
        before = rss_mb()
        for start in range(0, tasks, 1000):
            container = ManagedBackgroundTasks(tm)
            for _ in range(min(1000, tasks - start)):
                container.add_task(job)
            await container()
        grown = rss_mb() - before
        await _check(tm, min(tasks, DEFAULT_MAX_RECORDS))
    return grown


async def cleanup() -> None:
    """Drop the filled stores (called when the worker exits)."""
    for store in _filled.values():
        await store.drop()
    _filled.clear()
