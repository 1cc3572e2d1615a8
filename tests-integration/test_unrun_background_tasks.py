"""A stored background task whose response does not run it is run once anyway, on
every durable store (the in-process store: ``test_failed_request_memory.py``).

FastAPI gives a route's background tasks only to a response the route returns without
a ``background`` of its own. An answer made from an ``HTTPException`` (a 404, a 409)
goes out without them, as does a response the route returned with its own
``background``; Starlette then never runs them. The 4xx acknowledged the tasks (they
were written before it went out), and nothing adopts a PENDING task of a live
instance, so the middleware starts them once the response is sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from durable_stores import DURABLE, isolated_url
from fastapi import BackgroundTasks, FastAPI, HTTPException
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask

from fastapi_taskflow import TaskManager, TaskStatus

pytestmark = pytest.mark.anyio

Wait = Callable[..., Awaitable[Any]]

ran: list[str] = []


async def remember(label: str) -> None:
    ran.append(label)


@pytest.fixture(params=sorted(DURABLE))
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from isolated_url(request.param, tmp_path)


@pytest.mark.parametrize(
    ("path", "status"), [("/add-then-404", 404), ("/add-then-own-background", 200)]
)
async def test_a_stored_task_the_response_did_not_run_runs_once(
    durable_url: str, path: str, status: int, wait_for: Wait
) -> None:
    task_manager = TaskManager(backend=durable_url)
    task_manager.task(name="tests.unrun.remember")(remember)
    app = FastAPI()
    task_manager.install(app)
    ids: list[str] = []

    @app.post("/add-then-404")
    def add_then_404(label: str, background_tasks: BackgroundTasks) -> None:
        ids.append(background_tasks.add_task(remember, label))
        raise HTTPException(status_code=404, detail="no such order")

    @app.post("/add-then-own-background")
    def add_then_own_background(label: str, background_tasks: BackgroundTasks) -> JSONResponse:
        ids.append(background_tasks.add_task(remember, label))
        return JSONResponse({}, background=BackgroundTask(print, "the response's own"))

    label = f"{path}-{durable_url}"
    async with task_manager:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            assert (await client.post(path, params={"label": label})).status_code == status

        async def succeeded() -> bool:
            record = await task_manager.store.aget(ids[0])
            return record is not None and record.status is TaskStatus.SUCCESS

        await wait_for(succeeded, timeout=10)
    assert ran.count(label) == 1
