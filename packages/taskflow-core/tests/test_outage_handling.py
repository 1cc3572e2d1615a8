"""Store outages: fail-fast admission with probes, and the middleware's 503.

The store here is the memory backend with a switch that makes its writes fail as an
unreachable server does (``BackendUnavailableError``). Real server restarts are in
``tests-integration/test_outages.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from fastapi import BackgroundTasks, FastAPI, HTTPException
from fastapi.testclient import TestClient

from fastapi_taskflow import TaskManager
from fastapi_taskflow.errors import BackendUnavailableError
from fastapi_taskflow.models import CreateResult, TaskRecord
from fastapi_taskflow.resilience import Availability
from taskflow_memory import MemoryBackend


class FlakyBackend(MemoryBackend):
    """A memory backend whose writes fail while ``down`` is set."""

    down = False
    create_now = None  # type: ignore[assignment]  # through the write buffer, like a server

    async def create_many(self, records: Sequence[TaskRecord]) -> list[CreateResult]:
        if self.down:
            raise BackendUnavailableError("the test switched the store off")
        return await super().create_many(records)

    async def get(self, task_id: str) -> TaskRecord | None:
        if self.down:
            raise BackendUnavailableError("the test switched the store off")
        return await super().get(task_id)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_check_refuses_while_down_but_lets_a_probe_through_now_and_then() -> None:
    clock = FakeClock()
    availability = Availability(first_delay=1.0, max_delay=4.0, clock=clock)
    availability.check()
    availability.failed(BackendUnavailableError("down"))
    with pytest.raises(BackendUnavailableError, match="a route can answer 503"):
        availability.check()
    clock.now += 1.0
    availability.check()  # the probe
    with pytest.raises(BackendUnavailableError):
        availability.check()
    clock.now += 1.5  # the next probe waits twice as long
    with pytest.raises(BackendUnavailableError):
        availability.check()
    clock.now += 0.5
    availability.check()
    clock.now += 100
    availability.check()
    availability.succeeded()
    for _ in range(3):
        availability.check()  # open again


@pytest.mark.anyio
async def test_persist_while_stops_when_no_longer_needed() -> None:
    availability = Availability(first_delay=0.001)
    calls = 0

    async def op() -> None:
        nonlocal calls
        calls += 1
        raise BackendUnavailableError("down")

    await availability.persist_while(lambda: calls < 3, op)
    assert calls == 3
    assert not availability.available


@pytest.fixture
def flaky_app() -> Iterator[tuple[TestClient, FlakyBackend, TaskManager, list[int]]]:
    backend = FlakyBackend()
    task_manager = TaskManager(backend=backend)
    app = FastAPI()
    task_manager.install(app)
    ran: list[int] = []

    def work(n: int) -> None:
        ran.append(n)

    @app.post("/add")
    def add(n: int, background_tasks: BackgroundTasks) -> dict[str, str]:
        return {"task_id": background_tasks.add_task(work, n)}

    @app.post("/add-then-fail")
    def add_then_fail(n: int, background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(work, n)
        raise HTTPException(status_code=502, detail="upstream failed")

    @app.post("/add-then-crash")
    def add_then_crash(n: int, background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(work, n)
        raise RuntimeError("boom")

    @app.post("/add-then-409")
    def add_then_409(n: int, background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(work, n)
        raise HTTPException(status_code=409, detail="already done")

    # a keyed add_task() writes its record at once: stored before the request fails
    @app.post("/add-keyed-then-fail")
    def add_keyed_then_fail(n: int, background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(work, n, idempotency_key=f"job-{n}")
        raise HTTPException(status_code=502, detail="upstream failed")

    @app.post("/add-keyed-then-crash")
    def add_keyed_then_crash(n: int, background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(work, n, idempotency_key=f"job-{n}")
        raise RuntimeError("boom")

    @app.get("/tasks/{task_id}")
    async def read(task_id: str) -> dict[str, str | None]:
        record = await task_manager.store.aget(task_id)
        return {"status": None if record is None else record.status.value}

    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, backend, task_manager, ran


def test_a_read_during_an_outage_gets_503_that_says_only_the_store_is_down(
    flaky_app: tuple[TestClient, FlakyBackend, TaskManager, list[int]],
) -> None:
    client, backend, _, _ = flaky_app
    backend.down = True
    response = client.get("/tasks/some-id")
    assert response.status_code == 503
    assert response.json() == {"detail": "the task store is unavailable; retry later"}
    backend.down = False
    assert client.get("/tasks/some-id").json() == {"status": None}


def test_a_request_whose_tasks_cannot_be_written_gets_503_and_its_tasks_are_dropped(
    flaky_app: tuple[TestClient, FlakyBackend, TaskManager, list[int]],
) -> None:
    client, backend, task_manager, ran = flaky_app
    engine = task_manager._engine
    backend.down = True
    response = client.post("/add", params={"n": 1})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "no task was accepted" in response.json()["detail"]
    assert "task_id" not in response.text
    assert len(engine.pending) == 0 and not engine.tasks
    # known down now: refused at add_task(); the middleware answers the same 503
    refused = client.post("/add", params={"n": 2})
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"

    backend.down = False
    deadline = time.monotonic() + 5
    while (response := client.post("/add", params={"n": 3})).status_code != 200:
        assert time.monotonic() < deadline, "never accepted again"
        time.sleep(0.02)  # until a probe lets a task through
    task_id = response.json()["task_id"]
    assert task_manager.store.get(task_id) is not None
    assert ran == [3]
    assert len(engine.pending) == 0 and not engine.tasks


def _settled(engine: Any) -> None:
    deadline = time.monotonic() + 5
    while engine.tasks or len(engine.pending):
        assert time.monotonic() < deadline, "a task of the failed request is stranded"
        time.sleep(0.01)


@pytest.mark.parametrize("path", ["/add-then-fail", "/add-then-crash"])
def test_unwritten_tasks_of_a_failed_request_are_dropped_and_it_is_logged(
    flaky_app: tuple[TestClient, FlakyBackend, TaskManager, list[int]],
    path: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, backend, task_manager, ran = flaky_app
    backend.down = True
    assert client.post(path, params={"n": 1}).status_code >= 500
    backend.down = False
    _settled(task_manager._engine)
    assert task_manager.store.query().items == [] and ran == []
    assert "were not acknowledged and are dropped" in caplog.text


@pytest.mark.parametrize("path", ["/add-keyed-then-fail", "/add-keyed-then-crash"])
def test_written_tasks_of_a_failed_request_run_exactly_once(
    flaky_app: tuple[TestClient, FlakyBackend, TaskManager, list[int]],
    path: str,
) -> None:
    """Starlette never runs the background tasks of a failed request; the middleware
    starts the stored ones, so none is left PENDING forever."""
    client, _backend, task_manager, ran = flaky_app
    assert client.post(path, params={"n": 1}).status_code >= 500
    _settled(task_manager._engine)
    stored = task_manager.store.query().items
    assert [record.status.value for record in stored] == ["success"]
    assert ran == [1]


def test_the_written_task_of_a_4xx_answer_made_from_an_exception_runs_once(
    flaky_app: tuple[TestClient, FlakyBackend, TaskManager, list[int]],
) -> None:
    """A 4xx acknowledges what add_task() accepted: the write buffer is written before
    the answer goes out. FastAPI gives the route's background tasks only to a response
    the route returns, so Starlette never runs this one; the middleware starts it
    instead of leaving it PENDING on a live instance, where nothing would adopt it."""
    client, _backend, task_manager, ran = flaky_app
    assert client.post("/add-then-409", params={"n": 1}).status_code == 409
    _settled(task_manager._engine)
    stored = task_manager.store.query().items
    assert [record.status.value for record in stored] == ["success"]
    assert ran == [1]


@pytest.mark.parametrize("path", ["/add-then-fail", "/add-then-crash"])
def test_an_unkeyed_task_of_a_failed_request_is_run_or_dropped_never_stranded(
    flaky_app: tuple[TestClient, FlakyBackend, TaskManager, list[int]],
    path: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the store up, the write races the failing response: either the record was
    written first (then the task runs), or it is dropped, and the drop is logged."""
    client, _backend, task_manager, ran = flaky_app
    assert client.post(path, params={"n": 1}).status_code >= 500
    _settled(task_manager._engine)
    stored = task_manager.store.query().items
    if stored:
        assert [record.status.value for record in stored] == ["success"] and ran == [1]
    else:
        assert ran == [] and "were not acknowledged and are dropped" in caplog.text
