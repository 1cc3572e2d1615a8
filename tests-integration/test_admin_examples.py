"""The admin examples under examples/ do what docs/admin-api.md and docs/metrics.md say."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.anyio


def load(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` afresh (its module state is its own per test)."""
    spec = importlib.util.spec_from_file_location(
        f"taskflow_admin_examples.{name}", ROOT / "examples" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@asynccontextmanager
async def served(module: ModuleType) -> AsyncIterator[httpx.AsyncClient]:
    async with module.task_manager:
        transport = httpx.ASGITransport(app=module.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def final(client: httpx.AsyncClient, task_id: str, **kw: Any) -> dict[str, Any]:
    with anyio.fail_after(10):
        while True:
            body: dict[str, Any] = (await client.get(f"/tasks/api/tasks/{task_id}", **kw)).json()
            if body["status"] in ("success", "failed"):
                return body
            await anyio.sleep(0.01)


async def test_admin_api_example(monkeypatch: pytest.MonkeyPatch) -> None:
    """Log in, see the failed task with its attempts, retry it, see it succeed."""
    monkeypatch.setenv("TASKFLOW_ADMIN_PASSWORD", "pw-for-tests")
    module = load("admin_api")
    async with served(module) as client:
        assert (await client.get("/tasks/api/tasks")).status_code == 401
        login = await client.post(
            "/tasks/login", data={"username": "admin", "password": "pw-for-tests"}
        )
        assert login.status_code == 303
        ok = (await client.post("/orders/o-1", params={"email": "a@example.com"})).json()
        flaky = (await client.post("/orders/flaky-1", params={"email": "b@example.com"})).json()
        assert (await final(client, ok["task_id"]))["status"] == "success"
        failed = await final(client, flaky["task_id"])
        assert failed["status"] == "failed" and failed["args"] is None
        assert [a["status"] for a in failed["attempts"]] == ["failed", "failed"]
        assert failed["attempts"][0]["error"] == "ConnectionError: mail server unreachable"

        page = (await client.get("/tasks/api/tasks", params={"status": "failed"})).json()
        assert [row["task_id"] for row in page["items"]] == [flaky["task_id"]]
        search = (await client.get("/tasks/api/tasks", params={"q": "flaky"})).json()
        assert [row["task_id"] for row in search["items"]] == [flaky["task_id"]]

        retried = await client.post(f"/tasks/api/tasks/{flaky['task_id']}/retry")
        assert retried.json()["status"] == "pending"
        assert (await final(client, flaky["task_id"]))["status"] == "success"
        stats = (await client.get("/tasks/api/stats")).json()
        assert stats["by_status"] == {"success": 2}


async def test_admin_metrics_example() -> None:
    """The scrape needs the bearer token; the series are the documented ones."""
    module = load("admin_metrics")
    token = {"authorization": f"Bearer {module.SCRAPE_TOKEN}"}
    async with served(module) as client:
        assert (await client.get("/tasks/metrics")).status_code == 401
        ids = [
            (await client.post("/mail", params={"address": a})).json()["task_id"]
            for a in ("ada@example.com", "bob@example.invalid")
        ]
        for task_id in ids:
            await final(client, task_id, headers=token)
        response = await client.get("/tasks/metrics", headers=token)
    assert response.status_code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    assert samples["taskflow_tasks", (("func", "mail.send"), ("status", "success"))] == 1
    assert samples["taskflow_tasks", (("func", "mail.send"), ("status", "failed"))] == 1
    assert samples["taskflow_queue_depth", (("queue", "emails"),)] == 0
    assert samples["taskflow_task_retries_total", (("func", "mail.send"),)] == 2
    done = ("taskflow_task_duration_seconds_count", (("func", "mail.send"), ("status", "success")))
    assert samples[done] == 1
