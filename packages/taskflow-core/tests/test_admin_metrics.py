"""``GET /tasks/metrics``: Prometheus exposition of the store and this instance's events."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from fastapi_taskflow import QueueConfig, TaskManager, TaskStatus
from fastapi_taskflow.admin import TaskAdmin

pytestmark = pytest.mark.anyio


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


async def _final(tm: TaskManager, task_id: str) -> None:
    with anyio.fail_after(10):
        while True:
            record = await tm.store.aget(task_id)
            if record is not None and record.status.is_terminal:
                return
            await anyio.sleep(0.01)


async def test_metrics_exposition() -> None:
    tm = TaskManager(queues={"emails": QueueConfig(max_size=10)})
    attempts: dict[int, int] = {}

    @tm.task(name="jobs.work", retries=1)
    async def work(n: int) -> None:
        attempts[n] = attempts.get(n, 0) + 1
        if n == 2 and attempts[n] == 1:
            raise RuntimeError("once")
        if n == 3:
            raise RuntimeError("always")

    app = FastAPI()
    admin = TaskAdmin(app, tm)
    async with tm:
        for n in (1, 2, 3):
            await _final(tm, tm.add_task(work, n))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/tasks/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    got = _samples(response.text)
    assert got["taskflow_tasks", (("func", "jobs.work"), ("status", "success"))] == 2
    assert got["taskflow_tasks", (("func", "jobs.work"), ("status", "failed"))] == 1
    assert got["taskflow_tasks_by_status", (("status", "failed"),)] == 1
    assert got["taskflow_queue_depth", (("queue", "emails"),)] == 0
    assert got["taskflow_queue_depth", (("queue", "default"),)] == 0
    count = ("taskflow_task_duration_seconds_count", (("func", "jobs.work"), ("status", "success")))
    assert got[count] == 2
    failed = ("taskflow_task_duration_seconds_count", (("func", "jobs.work"), ("status", "failed")))
    assert got[failed] == 1
    # n=2 and n=3 each failed one attempt that was retried.
    assert got["taskflow_task_retries_total", (("func", "jobs.work"),)] == 2
    assert got["taskflow_tasks_finished_total", (("func", "jobs.work"), ("status", "failed"))] == 1
    assert TaskStatus.SUCCESS.value in response.text
    assert admin.metrics.registry is not TaskAdmin(None, TaskManager()).metrics.registry


async def test_each_admin_has_its_own_registry() -> None:
    """Two admins in one process never share series (no global registry)."""
    first, second = TaskManager(), TaskManager()

    @first.task(name="only.first")
    async def job() -> None:
        return None

    apps: list[Any] = []
    for tm in (first, second):
        app = FastAPI()
        TaskAdmin(app, tm)
        apps.append(app)
    async with first, second:
        await _final(first, first.add_task(job))
        texts = []
        for app in apps:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                texts.append((await client.get("/tasks/metrics")).text)
    assert "only.first" in texts[0] and "only.first" not in texts[1]
