"""Benchmark the SQL store's admin queries at scale, and its write throughput.

Fills a fresh store with N finished tasks (bulk-loaded with
``taskflow_sql.bulk_insert_tasks``: COPY on PostgreSQL, executemany elsewhere, with the
stats counters kept exact), then times the queries the admin dashboard runs:

* one page (50) of the task list filtered by status, and the next page by cursor;
* one page filtered by function name, and by tag;
* the aggregate ``stats()``;
* ``get()`` of a task by id (with its logs).

Then it measures durable task lifecycles per second (create -> RUNNING -> SUCCESS, each
transition committed) with many in flight at once, which on SQLite exercises the group
commit writer.

    python benchmarks/sql_store.py --rows 1000000 --backends sqlite,postgres

PostgreSQL and MySQL URLs come from ``TASKFLOW_TEST_POSTGRES_URL`` /
``TASKFLOW_TEST_MYSQL_URL`` (local defaults); each run uses a fresh schema or table
prefix and drops it afterwards. SQLite uses a temporary file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from fastapi_taskflow.clock import SystemClock
from fastapi_taskflow.models import TaskQuery, TaskRecord, TaskStatus, TaskUpdate
from taskflow_sql import SQLBackend, bulk_insert_tasks
from taskflow_sql.urls import parse_url

URLS = {
    "postgres": os.environ.get(
        "TASKFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    ),
    "mysql": os.environ.get("TASKFLOW_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
}
FUNCS = [f"app.tasks.job_{n}" for n in range(20)]
FINISHED = [TaskStatus.SUCCESS] * 8 + [TaskStatus.FAILED, TaskStatus.CANCELLED]


def records(rows: int, start: Any) -> Iterator[TaskRecord]:
    """N finished tasks spread over a month, 20 functions, 10 tenants, 10% failed."""
    rng = random.Random(7)
    for n in range(rows):
        created = start + timedelta(seconds=n * 2.5)
        status = rng.choice(FINISHED)
        yield TaskRecord(
            task_id=f"bench{n:08d}",
            func_name=FUNCS[n % len(FUNCS)],
            status=status,
            args=[n, "user@example.com"],
            kwargs={"retry": False},
            tags={"tenant": f"t{n % 10}"},
            attempt=1,
            created_at=created,
            updated_at=created + timedelta(seconds=1),
            started_at=created,
            finished_at=created + timedelta(seconds=1),
            error="boom" if status is TaskStatus.FAILED else None,
            result=None if status is TaskStatus.FAILED else {"ok": True},
        )


async def timed(call: Callable[[], Awaitable[Any]], repeat: int = 20) -> tuple[float, float]:
    """Run ``call`` ``repeat`` times (after one warm-up); return (median, max) in ms."""
    await call()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), max(samples)


async def lifecycles(backend: SQLBackend, count: int, concurrency: int) -> float:
    """Durable create -> RUNNING -> SUCCESS lifecycles per second."""
    clock = backend.clock
    semaphore = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with semaphore:
            now = clock.now()
            task_id = f"life-{uuid.uuid4().hex}"
            await backend.create(
                TaskRecord(
                    task_id=task_id, func_name="app.tasks.noop", created_at=now, updated_at=now
                )
            )
            await backend.transition(
                task_id,
                expected=[TaskStatus.PENDING],
                new=TaskStatus.RUNNING,
                update=TaskUpdate(started_at=clock.now(), attempt=1),
            )
            await backend.transition(
                task_id,
                expected=[TaskStatus.RUNNING],
                new=TaskStatus.SUCCESS,
                update=TaskUpdate(finished_at=clock.now(), result=n),
            )

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(count)))
    return count / (time.perf_counter() - started)


async def analyze(backend: SQLBackend) -> None:
    """Refresh planner statistics, as autovacuum / a maintenance job would."""
    async with backend.engine.begin() as conn:
        if backend.kind == "postgresql":
            for table in backend.tables.all():
                await conn.execute(text(f'ANALYZE "{backend.tables.schema}"."{table.name}"'))
        elif backend.kind == "sqlite":
            await conn.execute(text("ANALYZE"))
        else:
            for table in (backend.tables.tasks, backend.tables.tags):
                await conn.execute(text(f"ANALYZE TABLE `{table.name}`"))


async def drop(kind: str, url: str, schema: str | None, prefix: str) -> None:
    engine = create_async_engine(parse_url(url).url)
    try:
        async with engine.begin() as conn:
            if kind == "postgres" and schema:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            elif kind == "mysql":
                rows = await conn.execute(
                    text(
                        "SELECT table_name FROM information_schema.tables "
                        "WHERE table_schema = DATABASE() AND table_name LIKE :p"
                    ),
                    {"p": prefix.replace("_", "\\_") + "%"},
                )
                for (name,) in rows.all():
                    await conn.execute(text(f"DROP TABLE `{name}`"))
    finally:
        await engine.dispose()


async def run(kind: str, rows: int, lifecycle_count: int, concurrency: int) -> None:
    prefix = f"bench{uuid.uuid4().hex[:6]}_"
    schema = f"tfbench_{uuid.uuid4().hex[:8]}" if kind == "postgres" else None
    folder = tempfile.mkdtemp(prefix="taskflow-bench-")
    url = f"sqlite:///{Path(folder) / 'bench.db'}" if kind == "sqlite" else URLS[kind]
    clock = SystemClock()
    backend = SQLBackend(
        url, table_prefix=prefix, schema=schema, clock=clock, sqlite_synchronous="FULL"
    )
    await backend.open()
    try:
        print(f"\n== {kind}: {rows:,} finished tasks ==")
        started = time.perf_counter()
        start = clock.now() - timedelta(seconds=rows * 2.5 + 3600)
        await bulk_insert_tasks(backend, records(rows, start))
        load = time.perf_counter() - started
        print(f"bulk load            {load:8.1f} s   ({rows / load:,.0f} rows/s)")
        await analyze(backend)

        page = TaskQuery(statuses=[TaskStatus.FAILED], limit=50)
        first = await backend.query(page)
        cursor = first.next_cursor
        cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("page by status", lambda: backend.query(page)),
            (
                "next page (cursor)",
                lambda: backend.query(page.model_copy(update={"cursor": cursor})),
            ),
            ("page by func_name", lambda: backend.query(TaskQuery(func_name=FUNCS[3], limit=50))),
            ("page by tag", lambda: backend.query(TaskQuery(tags={"tenant": "t4"}, limit=50))),
            ("stats()", backend.stats),
            ("get(id)", lambda: backend.get(f"bench{random.randrange(rows):08d}")),
        ]
        for name, call in cases:
            median, worst = await timed(call)
            print(f"{name:20} {median:8.2f} ms median, {worst:7.2f} ms max")
        stats = await backend.stats()
        assert stats.total == rows, stats.total
        if lifecycle_count:
            rate = await lifecycles(backend, lifecycle_count, concurrency)
            print(
                f"lifecycles/s         {rate:8.0f}     (create+2 transitions, durable, "
                f"{concurrency} in flight)"
            )
    finally:
        await backend.close()
        if kind != "sqlite":
            await drop(kind, url, schema, prefix)
        else:
            for name in os.listdir(folder):
                os.remove(os.path.join(folder, name))
            os.rmdir(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="finished tasks to load")
    parser.add_argument(
        "--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres, mysql"
    )
    parser.add_argument(
        "--lifecycles",
        type=int,
        default=5000,
        help="task lifecycles for the throughput figure (0: skip)",
    )
    parser.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args()
    for kind in [k.strip() for k in args.backends.split(",") if k.strip()]:
        asyncio.run(run(kind, args.rows, args.lifecycles, args.concurrency))


if __name__ == "__main__":
    main()
