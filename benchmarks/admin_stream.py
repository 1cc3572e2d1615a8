"""Benchmark the admin API at scale: event stream bytes per change and the first page.

Fills a SQLite file with N finished tasks (``taskflow_sql.bulk_insert_tasks``), serves
a real app (``TaskAdmin`` under uvicorn, over HTTP on localhost) on that file, then:

* times the dashboard's first call, ``GET /tasks/api/tasks?limit=50`` (cold, then the
  median and max of repeated calls), and ``GET /tasks/api/stats`` for reference;
* opens ``GET /tasks/api/events``, enqueues one task, and counts the bytes the stream
  sends for it: each message (one change) and the whole life of the task.

Targets (issue 11): one change < 2 KB on the stream; the first page < 300 ms.

    python benchmarks/admin_stream.py --rows 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from fastapi_taskflow import TaskManager, task_log
from fastapi_taskflow.admin import TaskAdmin
from fastapi_taskflow.clock import SystemClock
from fastapi_taskflow.models import TaskRecord, TaskStatus
from taskflow_sql import SQLBackend, bulk_insert_tasks

FUNCS = [f"app.tasks.job_{n}" for n in range(20)]
FINISHED = [TaskStatus.SUCCESS] * 8 + [TaskStatus.FAILED, TaskStatus.CANCELLED]
TARGET_CHANGE_BYTES = 2048
TARGET_FIRST_PAGE_MS = 300.0


def records(rows: int, start: Any) -> Iterator[TaskRecord]:
    """N finished tasks over the past days: 20 functions, 10 tenants, 10% failed."""
    rng = random.Random(11)
    for n in range(rows):
        created = start + timedelta(seconds=n * 2.5)
        status = rng.choice(FINISHED)
        took = timedelta(milliseconds=rng.randint(5, 4000))
        yield TaskRecord(
            task_id=f"bench{n:08d}",
            func_name=FUNCS[n % len(FUNCS)],
            status=status,
            args=[n, "user@example.com"],
            kwargs={"retry": False},
            tags={"tenant": f"t{n % 10}"},
            attempt=1,
            created_at=created,
            updated_at=created + took,
            started_at=created,
            finished_at=created + took,
            error="RuntimeError: boom" if status is TaskStatus.FAILED else None,
            result=None if status is TaskStatus.FAILED else {"ok": True},
        )


async def fill(url: str, rows: int) -> float:
    clock = SystemClock()
    backend = SQLBackend(url, clock=clock)
    await backend.open()
    try:
        started = time.perf_counter()
        start = clock.now() - timedelta(seconds=rows * 2.5 + 60)
        await bulk_insert_tasks(backend, records(rows, start))
        return time.perf_counter() - started
    finally:
        await backend.close()


def build(url: str) -> FastAPI:
    tm = TaskManager(backend=url)

    @tm.task(name="app.tasks.bench_probe")
    async def probe(user_id: int, email: str) -> dict[str, Any]:
        task_log("sending", user_id=user_id)
        return {"sent": email}

    app = FastAPI(lifespan=tm.lifespan)
    TaskAdmin(app, tm)

    @app.post("/probe")
    async def enqueue() -> dict[str, str]:
        return {"task_id": tm.add_task(probe, 42, "user@example.com", tags={"tenant": "t1"})}

    return app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start within 60 s")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def first_page(base: str, repeat: int) -> tuple[float, float, float, int]:
    """(cold ms, median ms, max ms, response bytes) of the dashboard's list call."""
    samples = []
    size = 0
    with httpx.Client(base_url=base, timeout=60) as client:
        for _ in range(repeat + 1):
            started = time.perf_counter()
            response = client.get("/tasks/api/tasks", params={"limit": 50})
            response.raise_for_status()
            samples.append((time.perf_counter() - started) * 1000)
            size = len(response.content)
            assert len(response.json()["items"]) == 50
    return samples[0], statistics.median(samples[1:]), max(samples[1:]), size


def stats_call(base: str, repeat: int) -> tuple[float, float]:
    samples = []
    with httpx.Client(base_url=base, timeout=60) as client:
        for _ in range(repeat):
            started = time.perf_counter()
            client.get("/tasks/api/stats").raise_for_status()
            samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), max(samples)


async def stream_bytes(base: str) -> list[tuple[str, str, int]]:
    """Enqueue one task with the stream open; return (event, status, bytes) per message."""
    found: list[tuple[str, str, int]] = []
    async with (
        httpx.AsyncClient(base_url=base, timeout=60) as client,
        client.stream("GET", "/tasks/api/events") as stream,
    ):
        lines = stream.aiter_lines()
        async for line in lines:
            if line == ": connected":
                break
        task_id = (await client.post("/probe")).json()["task_id"]
        kind, data, size = "", "", 0
        deadline = time.monotonic() + 60
        async for line in lines:
            size += len(line.encode()) + 1
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and kind:
                event = json.loads(data)
                if event["task_id"] == task_id:
                    found.append((kind, event.get("status", event.get("level", "")), size + 1))
                    done = {(k, s) for k, s, _ in found}
                    if ("lifecycle", "success") in done and any(k == "log" for k, _ in done):
                        return found
                kind, data, size = "", "", 0
            elif line == "":
                size = 0
            if time.monotonic() > deadline:
                raise RuntimeError(f"the task did not finish on the stream: {found}")
    raise RuntimeError("the stream ended early")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="finished tasks to load")
    parser.add_argument("--repeat", type=int, default=20, help="timed list calls")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="taskflow-admin-bench-") as folder:
        url = f"sqlite:///{Path(folder) / 'tasks.db'}"
        print(f"== admin API on SQLite with {args.rows:,} finished tasks ==")
        load = asyncio.run(fill(url, args.rows))
        print(f"bulk load                {load:8.1f} s")
        served = Served(build(url))
        try:
            cold, median, worst, size = first_page(served.url, args.repeat)
            verdict = "ok" if median < TARGET_FIRST_PAGE_MS else "OVER TARGET"
            print(
                f"first page (limit=50)    {median:8.1f} ms median, {worst:.1f} ms max, "
                f"{cold:.1f} ms cold, {size:,} bytes   [{verdict}: < {TARGET_FIRST_PAGE_MS:.0f} ms]"
            )
            stats_median, stats_worst = stats_call(served.url, 5)
            print(
                f"stats                    {stats_median:8.1f} ms median, {stats_worst:.1f} ms max"
            )
            messages = asyncio.run(stream_bytes(served.url))
        finally:
            served.stop()
    largest = max(size for _, _, size in messages)
    total = sum(size for _, _, size in messages)
    verdict = "ok" if largest < TARGET_CHANGE_BYTES else "OVER TARGET"
    for kind, what, size in messages:
        print(f"  stream message  {kind:9} {what:8} {size:6,} bytes")
    print(
        f"stream, one change       {largest:8,} bytes max   [{verdict}: < {TARGET_CHANGE_BYTES:,}]"
        f"\nstream, whole task life  {total:8,} bytes in {len(messages)} messages"
    )


if __name__ == "__main__":
    main()
