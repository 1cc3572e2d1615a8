"""The admin API's JSON routes against a real app on the memory backend."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import ValidationError

from fastapi_taskflow import TaskManager, TaskStatus
from fastapi_taskflow.admin import TaskAdmin
from fastapi_taskflow.admin.core import AdminConfigError
from fastapi_taskflow.admin.schemas import PurgeRequest
from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.models import TaskRecord

pytestmark = pytest.mark.anyio

XSS = "<img src=x onerror=alert(1)>"


class Harness:
    def __init__(self, tm: TaskManager, client: httpx.AsyncClient, calls: list[Any]) -> None:
        self.tm = tm
        self.client = client
        self.calls = calls

    async def record(self, task_id: str) -> TaskRecord:
        record = await self.tm.store.aget(task_id)
        assert record is not None
        return record


async def _build(display_args: bool = False) -> tuple[FastAPI, TaskManager, list[Any]]:
    tm = TaskManager()
    calls: list[Any] = []

    @tm.task(name="jobs.ok")
    async def ok(value: Any, *, note: str = "") -> str:
        calls.append(value)
        return f"done {value}"

    @tm.task(name="jobs.flaky")
    async def flaky(value: Any) -> None:
        calls.append(value)
        if len([c for c in calls if c == value]) < 2:
            raise RuntimeError(f"first try fails: {value}")

    app = FastAPI()
    TaskAdmin(app, tm, display_args=display_args)
    app.state.funcs = {"ok": ok, "flaky": flaky}
    return app, tm, calls


@pytest.fixture
async def admin() -> AsyncIterator[Harness]:
    app, tm, calls = await _build()
    async with tm:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            harness = Harness(tm, client, calls)
            harness.app = app  # type: ignore[attr-defined]
            yield harness


async def _run(h: Harness, name: str, *args: Any, **kwargs: Any) -> str:
    func = h.app.state.funcs[name]  # type: ignore[attr-defined]
    task_id = h.tm.add_task(func, *args, **kwargs)
    return task_id


async def _settled(h: Harness, task_id: str, eventually: Any) -> TaskRecord:
    """Poll (with a deadline) until the task reaches a final status; return it."""
    with anyio.fail_after(10):
        while True:
            record = await h.tm.store.aget(task_id)
            if record is not None and record.status.is_terminal:
                return record
            await anyio.sleep(0.01)


async def test_list_filters_search_and_pages(admin: Harness, eventually: Any) -> None:
    """Filters, text search and keyset pagination reach the store; rows are JSON."""
    ids = [
        await _run(admin, "ok", i, tags={"tenant": "acme" if i % 2 else "globex"}) for i in range(5)
    ]
    xss = await _run(admin, "ok", 99, tags={"label": XSS})
    for task_id in [*ids, xss]:
        await _settled(admin, task_id, eventually)
    r = await admin.client.get("/tasks/api/tasks", params={"limit": 4})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert len(body["items"]) == 4 and body["next_cursor"]
    rest = await admin.client.get(
        "/tasks/api/tasks", params={"limit": 4, "cursor": body["next_cursor"]}
    )
    seen = [row["task_id"] for row in body["items"] + rest.json()["items"]]
    assert sorted(seen) == sorted([*ids, xss]) and rest.json()["next_cursor"] is None
    acme = await admin.client.get("/tasks/api/tasks", params={"tag": "tenant:acme"})
    assert sorted(row["task_id"] for row in acme.json()["items"]) == sorted(ids[1::2])
    found = await admin.client.get("/tasks/api/tasks", params={"q": "ONERROR"})
    (row,) = found.json()["items"]
    assert row["task_id"] == xss and row["tags"] == {"label": XSS}  # data, not markup
    assert row["status"] == "success" and row["duration_seconds"] is not None
    both = await admin.client.get(
        "/tasks/api/tasks",
        params=[("status", "failed"), ("status", "success"), ("func", "jobs.ok")],
    )
    assert len(both.json()["items"]) == 6
    none = await admin.client.get("/tasks/api/tasks", params={"status": "failed"})
    assert none.json() == {"items": [], "next_cursor": None}


async def test_bad_filters_are_400_with_a_hint(admin: Harness) -> None:
    r = await admin.client.get("/tasks/api/tasks", params={"cursor": "garbage"})
    assert r.status_code == 400 and "next_cursor" in r.json()["detail"]
    r = await admin.client.get("/tasks/api/tasks", params={"tag": "no-colon"})
    assert r.status_code == 400 and "key:value" in r.json()["detail"]
    r = await admin.client.get("/tasks/api/tasks", params={"status": "bogus"})
    assert r.status_code == 422


async def test_detail_hides_arguments_unless_display_args(eventually: Any) -> None:
    """Arguments and results are null by default and shown with display_args=True."""
    for display in (False, True):
        app, tm, _ = await _build(display_args=display)
        async with tm:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                task_id = tm.add_task(app.state.funcs["ok"], XSS, note="secret")
                h = Harness(tm, client, [])
                await _settled(h, task_id, eventually)
                body = (await client.get(f"/tasks/api/tasks/{task_id}")).json()
        if display:
            assert body["args"] == [XSS] and body["kwargs"] == {"note": "secret"}
            assert body["result"] == f"done {XSS}"
        else:
            assert body["args"] is None and body["kwargs"] is None and body["result"] is None
        assert body["status"] == "success" and body["attempts"][-1]["status"] == "success"


async def test_attempts_logs_retry_and_unknown_ids(admin: Harness, eventually: Any) -> None:
    """A failed task shows its attempt with error and traceback; retry re-runs it."""
    task_id = await _run(admin, "flaky", "x")
    failed = await _settled(admin, task_id, eventually)
    assert failed.status is TaskStatus.FAILED
    attempts = (await admin.client.get(f"/tasks/api/tasks/{task_id}/attempts")).json()
    assert attempts[0]["status"] == "failed"
    assert attempts[0]["error"] == "RuntimeError: first try fails: x"
    assert "Traceback" in attempts[0]["traceback"]
    logs = (await admin.client.get(f"/tasks/api/tasks/{task_id}/logs")).json()
    assert logs[0]["message"].startswith("attempt 1 failed") and logs[0]["level"] == "error"

    r = await admin.client.post(f"/tasks/api/tasks/{task_id}/retry")
    assert r.status_code == 200
    assert r.json()["task_id"] == task_id and r.json()["status"] == "pending"
    again = await _settled(admin, task_id, eventually)
    assert again.status is TaskStatus.SUCCESS and admin.calls == ["x", "x"]
    assert (await admin.client.post(f"/tasks/api/tasks/{task_id}/retry")).status_code == 409
    assert (await admin.client.post(f"/tasks/api/tasks/{task_id}/cancel")).status_code == 409
    for path in ("", "/logs", "/attempts"):
        r = await admin.client.get(f"/tasks/api/tasks/nope{path}")
        assert r.status_code == 404 and "nope" in r.json()["detail"]
    assert (await admin.client.post("/tasks/api/tasks/nope/retry")).status_code == 404
    assert (await admin.client.post("/tasks/api/tasks/nope/cancel")).status_code == 404


async def test_retry_failed_cancel_and_purge(eventually: Any) -> None:
    """Bulk retry by filter, cancel of a pending task, purge by age."""
    clock = ManualClock()
    tm = TaskManager(clock=clock)
    runs: list[str] = []

    @tm.task(name="jobs.fail_once")
    async def fail_once(value: str) -> None:
        runs.append(value)
        if runs.count(value) == 1:
            raise ValueError(value)

    app = FastAPI()
    TaskAdmin(app, tm)
    async with tm:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            h = Harness(tm, client, [])
            ids = [tm.add_task(fail_once, v, tags={"batch": "b1"}) for v in "abc"]
            for task_id in ids:
                await _settled(h, task_id, eventually)
            r = await client.post("/tasks/api/tasks/retry-failed", json={"tag": ["batch:b1"]})
            assert r.status_code == 200
            assert sorted(r.json()["task_ids"]) == sorted(ids) and r.json()["stopped"] is None
            for task_id in ids:
                assert (await _settled(h, task_id, eventually)).status is TaskStatus.SUCCESS

            backend = await tm.opened_backend()
            record = TaskRecord(
                task_id="waiting-1",
                func_name="jobs.fail_once",
                created_at=clock.now(),
                updated_at=clock.now(),
            )
            await backend.create(record)
            r = await client.post("/tasks/api/tasks/waiting-1/cancel")
            assert r.status_code == 200 and r.json()["status"] == "cancelled"

            clock.advance(7200)
            r = await client.post("/tasks/api/purge", json={"older_than_seconds": 3600})
            assert r.status_code == 200 and r.json() == {"purged": 4}
            r = await client.post("/tasks/api/purge", json={"older_than_seconds": -1})
            assert r.status_code == 422


async def test_cancel_stops_a_running_task(eventually: Any) -> None:
    """The cancel route cancels a RUNNING task as ``task_manager.cancel()`` does: it is
    stopped where it runs and ends CANCELLED; cancelling it again changes nothing."""
    tm = TaskManager()
    started = anyio.Event()
    reached_end: list[bool] = []

    @tm.task(name="jobs.forever")
    async def forever() -> None:
        started.set()
        await anyio.sleep_forever()
        reached_end.append(True)

    app = FastAPI()
    TaskAdmin(app, tm)
    async with tm:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            task_id = tm.add_task(forever)
            with anyio.fail_after(10):
                await started.wait()
            r = await client.post(f"/tasks/api/tasks/{task_id}/cancel")
            assert r.status_code == 200 and r.json()["status"] in ("running", "cancelled")
            done = await _settled(Harness(tm, client, []), task_id, eventually)
            assert done.status is TaskStatus.CANCELLED and done.cancel_requested
            assert reached_end == []
            again = await client.post(f"/tasks/api/tasks/{task_id}/cancel")
            assert again.status_code == 200 and again.json()["status"] == "cancelled"


async def test_stats_are_complete_and_zero_filled(admin: Harness, eventually: Any) -> None:
    ids = [await _run(admin, "ok", i) for i in range(3)]
    for task_id in ids:
        await _settled(admin, task_id, eventually)
    r = await admin.client.get("/tasks/api/stats", params={"window_seconds": 600})
    body = r.json()
    assert body["total"] == 3 and body["by_status"] == {"success": 3}
    assert body["by_func"] == {"jobs.ok": {"success": 3}}
    assert body["durations"]["jobs.ok"]["count"] == 3
    assert len(body["throughput"]) == 10 and body["bucket_seconds"] == 60
    assert sum(p["succeeded"] for p in body["throughput"]) == 3
    assert body["queues"] == {"default": 0}
    wide = await admin.client.get(
        "/tasks/api/stats", params={"window_seconds": 30 * 86400, "bucket_seconds": 1}
    )
    assert len(wide.json()["throughput"]) <= 1001


async def test_router_usable_alone_and_bad_path(caplog: pytest.LogCaptureFixture) -> None:
    """The router can be included on its own; a bad path is a clear error; no auth warns."""
    tm = TaskManager()
    with caplog.at_level(logging.WARNING, logger="fastapi_taskflow"):
        admin = TaskAdmin(None, tm, path="/ops/tasks")
    assert "no auth" in caplog.text
    assert isinstance(admin.router, APIRouter)
    app = FastAPI()
    app.include_router(admin.router)
    paths = app.openapi()["paths"]
    assert "/ops/tasks/api/tasks" in paths and "/ops/tasks/metrics" in paths
    async with tm:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/ops/tasks/api/tasks")).json()["items"] == []
    for bad in ("tasks", "/tasks/", "/", "//x"):
        with pytest.raises(AdminConfigError, match="must start with '/'"):
            TaskAdmin(None, tm, path=bad)
    with pytest.raises(AdminConfigError, match="dependency"):
        TaskAdmin(None, tm, auth="secret")  # type: ignore[arg-type]
    # "false" from an environment variable is truthy: it would show every argument
    with pytest.raises(AdminConfigError, match="display_args must be True or False"):
        TaskAdmin(None, tm, display_args="false")  # type: ignore[arg-type]
    with pytest.raises(AdminConfigError, match="needs the app's TaskManager"):
        TaskAdmin(None, "tm")  # type: ignore[arg-type]
    with pytest.raises(AdminConfigError, match="title must be a string"):
        TaskAdmin(None, tm, title=None)  # type: ignore[arg-type]
    with pytest.raises(AdminConfigError, match="path must be a string"):
        TaskAdmin(None, tm, path=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_purge_age_that_is_not_a_finite_number_is_refused(value: float) -> None:
    """Python's JSON reader takes ``NaN`` and ``Infinity``: a purge given one reached
    ``timedelta(seconds=nan)`` and failed with a ValueError. (FastAPI then cannot write
    its own 422 answer, which echoes the value: that part is FastAPI's.)"""
    with pytest.raises(ValidationError, match="finite"):
        PurgeRequest(older_than_seconds=value)
