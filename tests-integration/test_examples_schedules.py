"""The examples of schedules.md, timeouts-and-cancellation.md and progress.md do what
their pages say (each example imported by path and driven in process)."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


def example(name: str) -> ModuleType:
    """Import a fresh ``examples/<name>.py`` (its own TaskManager)."""
    spec = importlib.util.spec_from_file_location(
        f"taskflow_examples_sched.{name}", ROOT / "examples" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@asynccontextmanager
async def serve(module: ModuleType) -> AsyncIterator[httpx.AsyncClient]:
    async with module.task_manager:
        transport = httpx.ASGITransport(app=module.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def until(client: httpx.AsyncClient, path: str, check: Callable[[Any], bool]) -> Any:
    deadline = time.monotonic() + 10
    while True:
        body = (await client.get(path)).json()
        if check(body):
            return body
        assert time.monotonic() < deadline, f"{path}: last {body!r}"
        await asyncio.sleep(0.02)


async def test_schedules_example() -> None:
    ex = example("schedules")
    async with serve(ex) as client:
        first = (await client.post("/reminders/ada", params={"text": "hi", "delay": 30})).json()
        moved = (await client.post("/reminders/ada", params={"text": "hello", "delay": 0.5})).json()
        assert first["task_id"] != moved["task_id"]
        listed = (await client.get("/reminders")).json()
        assert [(r["task_id"], r["run_key"]) for r in listed] == [
            (moved["task_id"], "reminder:ada")
        ]
        await client.post("/reminders/bob", params={"text": "bye", "delay": 30})
        assert (await client.delete("/reminders/bob")).json() == {"cancelled": True}
        await until(client, "/reminders", lambda body: body == [])
        deadline = time.monotonic() + 10
        while not (ex.sent and len(ex.rates) >= 2 and ex.syncs.count("end") >= 2):
            assert time.monotonic() < deadline, (ex.sent, ex.rates, ex.syncs)
            await asyncio.sleep(0.02)
    assert ex.sent == ["ada: hello"]
    # one sync at a time: every start is followed by its end before the next start
    ended = ex.syncs[: len(ex.syncs) // 2 * 2]
    assert ended == ["start", "end"] * (len(ended) // 2), ex.syncs
    record = ex.task_manager.store.get(first["task_id"])
    assert record is not None and record.status == "cancelled"


async def test_timeouts_and_cancellation_example() -> None:
    ex = example("timeouts_and_cancellation")
    async with serve(ex) as client:
        slow = (await client.post("/feeds/slow")).json()["task_id"]
        fast = (await client.post("/feeds/fast")).json()["task_id"]
        video = (await client.post("/videos/7")).json()["task_id"]
        crunch = (await client.post("/crunch/100000")).json()["task_id"]
        await until(client, f"/tasks/{fast}", lambda b: b["status"] == "success")
        await until(client, f"/tasks/{video}", lambda b: b["status"] == "running")
        await until(client, f"/tasks/{crunch}", lambda b: b["status"] == "running")
        assert (await client.delete(f"/tasks/{video}")).json()["cancel_requested"] is True
        assert (await client.delete(f"/tasks/{crunch}")).json()["cancel_requested"] is True
        await until(client, f"/tasks/{video}", lambda b: b["status"] == "cancelled")
        await until(client, f"/tasks/{crunch}", lambda b: b["status"] == "cancelled")
        assert ex.cleaned_up == ["video 7"]
        assert (await client.delete(f"/tasks/{fast}")).status_code == 409
        assert (await client.delete("/tasks/nope")).status_code == 404
        body = await until(client, f"/tasks/{slow}", lambda b: b["status"] == "failed")
    assert body["attempt"] == 2 and body["error"].startswith("TaskTimeoutError")


async def test_progress_example() -> None:
    ex = example("progress")
    async with serve(ex) as client:
        task_id = (await client.post("/imports", params={"rows": 500})).json()["task_id"]
        seen = await until(
            client, f"/tasks/{task_id}", lambda b: b["progress"] is not None and b["progress"] > 0
        )
        assert seen["status"] in ("running", "success")
        body = await until(client, f"/tasks/{task_id}", lambda b: b["status"] == "success")
    assert body["progress"] == 1.0
    assert body["messages"][0] == "starting" and body["messages"][-1] == "500 of 500 rows"
    assert len(body["messages"]) < 100  # coalesced: not one log line per row
