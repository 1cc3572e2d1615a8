"""A store unreachable at boot does not take the app down (issue 8, item 6).

The app starts, the outage is logged, routes that never enqueue answer as usual, the
routes that enqueue answer 503 until the store answers, and then everything works
without a restart. ``require_backend_at_startup=True`` keeps the old, strict startup.
Real servers started late are in ``tests-integration/test_outages.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
from fastapi import BackgroundTasks, FastAPI
from fastapi.testclient import TestClient

from fastapi_taskflow import BackendUnavailableError, TaskManager, TaskStatus
from taskflow_memory import MemoryBackend


class LateBackend(MemoryBackend):
    """A memory backend that cannot be opened while ``down`` is set (its forks too)."""

    def __init__(self, switch: dict[str, bool] | None = None) -> None:
        super().__init__()
        self.switch = switch if switch is not None else {"down": True}

    async def open(self) -> None:
        if self.switch["down"]:
            raise BackendUnavailableError("connection refused by db.internal:5432")
        await super().open()

    def fork(self) -> LateBackend:
        twin = LateBackend(self.switch)
        twin._state, twin._coord = self._state, self._coord  # the same storage
        return twin


def make_app(task_manager: TaskManager) -> tuple[FastAPI, list[int]]:
    app = FastAPI()
    task_manager.install(app)
    ran: list[int] = []

    def work(n: int) -> None:
        ran.append(n)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/add")
    def add(n: int, background_tasks: BackgroundTasks) -> dict[str, str]:
        return {"task_id": background_tasks.add_task(work, n)}

    return app, ran


@pytest.fixture
def late() -> Iterator[LateBackend]:
    yield LateBackend()


def test_the_app_starts_refuses_with_503_and_recovers_without_restart(
    late: LateBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fastapi_taskflow")
    task_manager = TaskManager(backend=late)
    app, ran = make_app(task_manager)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert "unreachable at startup" in caplog.text
        assert "require_backend_at_startup=True" in caplog.text
        assert client.get("/health").status_code == 200
        for n in range(3):
            refused = client.post("/add", params={"n": n})
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] == "1"
            assert "db.internal" not in refused.text
        assert ran == []

        late.switch["down"] = False  # the store comes up; no restart
        deadline = time.monotonic() + 10
        while (response := client.post("/add", params={"n": 7})).status_code != 200:
            assert response.status_code == 503
            assert time.monotonic() < deadline, "never accepted tasks after the store came up"
            time.sleep(0.05)
        record = task_manager.store.get(response.json()["task_id"])
        assert record is not None and record.status is TaskStatus.SUCCESS
        assert ran == [7]
        assert client.get("/health").status_code == 200
    assert "reachable again" in caplog.text


def test_probes_are_refused_while_the_store_was_never_opened(late: LateBackend) -> None:
    """While the store is down, one add_task() per probe interval goes through as a probe
    of the store. An in-process store is never asked (it would take the record though
    it was never opened): the probe is refused like every other call. Requests keep
    coming for 1.5 s, long enough for several probes (the first after 0.05 s, doubling).
    """
    task_manager = TaskManager(backend=late)
    app, ran = make_app(task_manager)
    with TestClient(app, raise_server_exceptions=False) as client:
        answers: list[int] = []
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            answers.append(client.post("/add", params={"n": len(answers)}).status_code)
        assert answers and set(answers) == {503}, answers
    assert ran == []


def test_strict_mode_fails_startup(late: LateBackend) -> None:
    task_manager = TaskManager(backend=late, require_backend_at_startup=True)
    app, _ = make_app(task_manager)
    with pytest.raises(BackendUnavailableError), TestClient(app):
        pass


@pytest.mark.anyio
async def test_a_manager_started_without_its_store_shuts_down_cleanly(late: LateBackend) -> None:
    task_manager = TaskManager(backend=late)
    async with task_manager:
        with pytest.raises(BackendUnavailableError, match="unreachable since startup"):
            await task_manager.store.aget("some-id")
    # leaving the block shut it down without raising, though the store never answered
