"""The admin API's JSON routes against a real app on the memory backend."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any, cast

import anyio
import httpx
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import ValidationError

from fastapi_taskflow import TaskManager, TaskStatus, task_log, task_progress
from fastapi_taskflow.admin import TaskAdmin
from fastapi_taskflow.admin.core import AdminConfigError
from fastapi_taskflow.admin.schemas import PurgeRequest
from fastapi_taskflow.admin.stream import event_stream
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
    ``timedelta(seconds=nan)`` and failed with a ValueError. (The route's 422 answer,
    which echoes the value, is checked below.)"""
    with pytest.raises(ValidationError, match="finite"):
        PurgeRequest(older_than_seconds=value)


def _cursor(created: object, task_id: str = "some-id") -> str:
    """A hand-made cursor in the shape ``next_cursor`` has."""
    return base64.urlsafe_b64encode(json.dumps([created, task_id]).encode()).decode()


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_made_up_cursors_and_out_of_range_bounds_are_refused_alike(
    backend: str, tmp_path: Path, eventually: Any
) -> None:
    """A cursor whose time has no offset (or is a date alone), or any time that leaves
    the calendar once in UTC, is a 400 or a 422 on every backend, never a 500 (the
    memory store compared naive with aware times; SQL stores could not bind the time)."""
    url = "memory://" if backend == "memory" else f"sqlite:///{tmp_path}/tasks.db"
    tm = TaskManager(url)

    @tm.task(name="jobs.ok")
    async def ok() -> None:
        return None

    app = FastAPI()
    TaskAdmin(app, tm)
    async with tm:
        task_id = tm.add_task(ok)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await _settled(Harness(tm, client, []), task_id, eventually)
            for created in [
                "2030-01-01T00:00:00",
                "2030-01-01",
                "9999-12-31T23:59:59-23:59",
                "0001-01-01T00:00:00+23:59",
            ]:
                r = await client.get("/tasks/api/tasks", params={"cursor": _cursor(created)})
                assert r.status_code == 400, (created, r.text)
                assert "next_cursor" in r.json()["detail"]
            for bound in ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"]:
                for name in ("created_after", "created_before"):
                    r = await client.get("/tasks/api/tasks", params={name: bound})
                    assert r.status_code == 422, (name, bound, r.text)
                    assert "out of range once converted to UTC" in r.text
                    r = await client.post("/tasks/api/tasks/retry-failed", json={name: bound})
                    assert r.status_code == 422, (name, bound, r.text)
            # the extremes themselves are fine, and an offset is honoured
            r = await client.get(
                "/tasks/api/tasks",
                params={
                    "created_after": "0001-01-01T00:00:00Z",
                    "created_before": "9999-12-31T23:59:59.999999Z",
                },
            )
            assert [row["task_id"] for row in r.json()["items"]] == [task_id]
            r = await client.get(
                "/tasks/api/tasks", params={"cursor": _cursor("9999-12-31T23:59:59+00:00")}
            )
            assert [row["task_id"] for row in r.json()["items"]] == [task_id]


@pytest.mark.parametrize("age", ["NaN", "Infinity", "-Infinity", "1e400"])
async def test_a_non_finite_purge_age_is_a_422_not_a_500(admin: Harness, age: str) -> None:
    """FastAPI's 422 echoes the refused value, and JSON has no NaN or infinity: the
    answer used to fail to encode (a 500). It is a 422 naming the field, as JSON."""
    r = await admin.client.post(
        "/tasks/api/purge",
        content=f'{{"older_than_seconds": {age}}}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "older_than_seconds"] and error["type"] == "finite_number"


async def test_a_search_with_a_lone_surrogate_is_an_empty_match(
    admin: Harness, eventually: Any
) -> None:
    """``"q": "\\ud800"`` in a retry-failed body matches nothing, as ``func`` does,
    instead of a 500; one too long is still a 422 that names the limit."""
    task_id = await _run(admin, "flaky", "s")
    await _settled(admin, task_id, eventually)
    json_body = {"content-type": "application/json"}
    for q in ("\\ud800", "ok\\udfff"):
        r = await admin.client.post(
            "/tasks/api/tasks/retry-failed", content=f'{{"q": "{q}"}}', headers=json_body
        )
        assert r.status_code == 200 and r.json() == {"task_ids": [], "stopped": None}
    too_long = "x" * 200 + "\\ud800"
    r = await admin.client.post(
        "/tasks/api/tasks/retry-failed", content=f'{{"q": "{too_long}"}}', headers=json_body
    )
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["type"] == "string_too_long" and error["loc"] == ["body", "q"]
    assert error["msg"] == "String should have at most 200 characters"
    r = await admin.client.post("/tasks/api/tasks/retry-failed", json={"q": "x" * 201})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "string_too_long"
    assert (await admin.record(task_id)).status is TaskStatus.FAILED


async def test_attempts_list_every_run_after_a_retry(admin: Harness, eventually: Any) -> None:
    """A retry restarts the attempt count: the failed first run and the successful retry
    are two entries (``run`` 1 and 2), and the success does not carry the old error."""
    task_id = await _run(admin, "flaky", "r")
    assert (await _settled(admin, task_id, eventually)).status is TaskStatus.FAILED
    assert (await admin.client.post(f"/tasks/api/tasks/{task_id}/retry")).status_code == 200
    assert (await _settled(admin, task_id, eventually)).status is TaskStatus.SUCCESS
    attempts = (await admin.client.get(f"/tasks/api/tasks/{task_id}/attempts")).json()
    assert [(a["run"], a["attempt"], a["status"]) for a in attempts] == [
        (1, 1, "failed"),
        (2, 1, "success"),
    ]
    first, second = attempts
    assert first["error"] == "RuntimeError: first try fails: r" and first["traceback"]
    assert second["error"] is None and second["traceback"] is None
    assert second["finished_at"] is not None
    detail = (await admin.client.get(f"/tasks/api/tasks/{task_id}")).json()
    assert detail["attempts"] == attempts and detail["error"] is None


async def test_a_run_ended_by_cancel_keeps_its_status_after_a_retry(
    admin: Harness, eventually: Any
) -> None:
    """A run cancelled while it ran wrote no failure line: once retried, its attempt
    shows CANCELLED (from the retry's ``was CANCELLED``), not ``running``."""
    started = anyio.Event()
    runs: list[int] = []

    @admin.tm.task(name="jobs.slow_once")
    async def slow_once() -> None:
        runs.append(1)
        if len(runs) == 1:
            task_log("working")
            started.set()
            await anyio.sleep_forever()

    task_id = admin.tm.add_task(slow_once)
    with anyio.fail_after(10):
        await started.wait()
    assert (await admin.client.post(f"/tasks/api/tasks/{task_id}/cancel")).status_code == 200
    assert (await _settled(admin, task_id, eventually)).status is TaskStatus.CANCELLED
    assert (await admin.client.post(f"/tasks/api/tasks/{task_id}/retry")).status_code == 200
    assert (await _settled(admin, task_id, eventually)).status is TaskStatus.SUCCESS
    attempts = (await admin.client.get(f"/tasks/api/tasks/{task_id}/attempts")).json()
    assert [(a["run"], a["attempt"], a["status"]) for a in attempts] == [
        (1, 1, "cancelled"),
        (2, 1, "success"),
    ]


async def test_the_event_stream_carries_a_running_tasks_progress() -> None:
    """``task_progress()`` reports reach the admin's event stream as ``log`` messages
    with ``progress`` set (the dashboard's row follows them); other lines have none."""
    tm = TaskManager()
    go_on = anyio.Event()

    @tm.task(name="jobs.report")
    async def report() -> None:
        task_log("starting")
        task_progress(0.25, "a quarter")
        await go_on.wait()

    progress: list[object] = []
    plain: list[object] = []
    async with tm:
        stream = cast(AsyncGenerator[bytes, None], event_stream(tm))  # what the route streams
        try:
            assert (await anext(stream)).startswith(b"retry:")  # subscribed from here
            tm.add_task(report)
            with anyio.fail_after(10):
                while not progress:
                    chunk = (await anext(stream)).decode()
                    if not chunk.startswith("event: log"):
                        continue
                    data = json.loads(chunk.split("data: ", 1)[1])
                    (progress if data["message"] == "a quarter" else plain).append(
                        data.get("progress", "absent")
                    )
        finally:
            go_on.set()
            await stream.aclose()
    assert progress == [0.25] and plain == ["absent"]  # other lines keep their shape


async def test_a_stream_client_that_fell_behind_is_told_with_an_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client too slow for the stream loses the oldest events and gets an ``event:
    dropped`` message (EventSource hands named events to JavaScript, comments not),
    then the events kept."""
    from fastapi_taskflow.admin import stream as stream_module

    monkeypatch.setattr(stream_module, "_BACKLOG", 5)
    tm = TaskManager()

    @tm.task(name="jobs.quick")
    async def quick() -> None:
        pass

    async with tm:
        stream = cast(AsyncGenerator[bytes, None], event_stream(tm))
        try:
            assert (await anext(stream)).startswith(b"retry:")  # subscribed from here
            ids = [tm.add_task(quick) for _ in range(10)]  # ~20 events, none read yet
            with anyio.fail_after(10):
                while not all(tm.store.get(t).status is TaskStatus.SUCCESS for t in ids):  # type: ignore[union-attr]
                    await anyio.sleep(0.01)
            chunk = (await anext(stream)).decode()
            assert chunk.startswith("event: dropped\n"), chunk
            dropped = json.loads(chunk.split("data: ", 1)[1])["dropped"]
            kept = [(await anext(stream)).decode() for _ in range(5)]
        finally:
            await stream.aclose()
    assert dropped >= 10  # 10 tasks' events, 5 kept: at least 15 made, 10 dropped
    assert all(k.startswith("event: ") for k in kept)
