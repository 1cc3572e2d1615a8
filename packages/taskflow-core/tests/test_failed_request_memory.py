"""A request whose response does not run its background tasks, on the in-process
store: its task was stored at ``add_task()``, Starlette never runs it (the response
that goes out is an error made from an exception, or a response the route returned
with a ``background`` of its own), so the middleware starts it: it runs once and ends
SUCCESS, never left PENDING."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from fastapi import BackgroundTasks, FastAPI, HTTPException
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from starlette.background import BackgroundTask

from fastapi_taskflow import TaskManager, TaskStatus


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/add-then/500", 500),
        ("/add-then/crash", 500),
        ("/add-then/404", 404),
        ("/add-then/own-background", 200),
    ],
)
def test_the_stored_task_the_response_did_not_run_runs_once(path: str, status: int) -> None:
    task_manager = TaskManager()
    ran: list[int] = []

    @task_manager.task()
    def job(n: int) -> None:
        ran.append(n)

    app = FastAPI()
    task_manager.install(app)

    @app.post("/add-then/{ending}")
    def add_then(ending: str, background_tasks: BackgroundTasks) -> JSONResponse:
        background_tasks.add_task(job, 1)
        if ending == "500":
            raise HTTPException(status_code=500, detail="boom")
        if ending == "crash":
            raise RuntimeError("boom")
        if ending == "404":
            raise HTTPException(status_code=404, detail="no such order")
        # FastAPI attaches the route's tasks only to a response without a background
        return JSONResponse({}, background=BackgroundTask(print, "the response's own"))

    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post(path).status_code == status
        deadline = time.monotonic() + 5
        while True:
            records = task_manager.store.query().items
            if records and records[0].status is TaskStatus.SUCCESS:
                break
            assert time.monotonic() < deadline, f"the task was left {records}"
            time.sleep(0.01)
    assert len(records) == 1 and ran == [1]


@pytest.mark.anyio
async def test_a_task_waiting_for_its_retry_is_not_started_early_after_an_error_answer() -> None:
    """An error answer that carries the route's background tasks: Starlette runs the
    task after sending it, the first attempt fails and the retry is due a minute later.
    The middleware, which starts the background tasks of a failed request that never
    started, leaves this one to its queue: the retry does not run early."""
    task_manager = TaskManager()
    attempts: list[int] = []

    @task_manager.task(retries=1, delay=60)
    async def flaky() -> None:
        attempts.append(len(attempts) + 1)
        if len(attempts) == 1:
            raise RuntimeError("the first attempt fails")

    app = FastAPI()
    task_manager.install(app)

    @app.post("/add-then-503")
    async def add_then_503(background_tasks: BackgroundTasks) -> JSONResponse:
        background_tasks.add_task(flaky)
        return JSONResponse({"detail": "busy"}, status_code=503)

    async with task_manager:
        runtime = task_manager._engine.runtime()
        before = set(runtime.background)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.post("/add-then-503")
        assert response.status_code == 503
        # whatever the request path started must end: a second attempt, if one was begun
        started = set(runtime.background) - before
        if started:
            await asyncio.wait(started, timeout=10)
        [record] = (await task_manager.store.aquery()).items
    assert attempts == [1]
    assert record.status is TaskStatus.PENDING and record.attempt == 1
