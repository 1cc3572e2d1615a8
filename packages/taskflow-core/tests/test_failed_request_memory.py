"""A request that fails after ``add_task()`` on the in-process store: its task was
stored at ``add_task()``, Starlette never runs it (the response that goes out is an
error, without the route's background tasks), so the middleware starts it: it runs
once and ends SUCCESS, never left PENDING."""

from __future__ import annotations

import time

import pytest
from fastapi import BackgroundTasks, FastAPI, HTTPException
from fastapi.testclient import TestClient

from fastapi_taskflow import TaskManager, TaskStatus


@pytest.mark.parametrize("path", ["/add-then-500", "/add-then-crash"])
def test_the_stored_task_of_a_failed_request_runs_once(path: str) -> None:
    task_manager = TaskManager()
    ran: list[int] = []

    @task_manager.task()
    def job(n: int) -> None:
        ran.append(n)

    app = FastAPI()
    task_manager.install(app)

    @app.post("/add-then-500")
    def add_then_500(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(job, 1)
        raise HTTPException(status_code=500, detail="boom")

    @app.post("/add-then-crash")
    def add_then_crash(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(job, 1)
        raise RuntimeError("boom")

    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post(path).status_code == 500
        deadline = time.monotonic() + 5
        while True:
            records = task_manager.store.query().items
            if records and records[0].status is TaskStatus.SUCCESS:
                break
            assert time.monotonic() < deadline, f"the task was left {records}"
            time.sleep(0.01)
    assert len(records) == 1 and ran == [1]
