"""``install()`` keeps working when something restores FastAPI's own BackgroundTasks
(issue 8, item 4): the hook is checked each time, not remembered in a flag."""

from __future__ import annotations

import fastapi.dependencies.utils as dependency_utils
import pytest
from fastapi import BackgroundTasks, FastAPI
from fastapi.testclient import TestClient
from starlette.background import BackgroundTasks as StarletteBackgroundTasks

from fastapi_taskflow import AppInstallError, TaskflowError, TaskManager


def make_app(task_manager: TaskManager) -> FastAPI:
    app = FastAPI()
    task_manager.install(app)

    @app.post("/add")
    def add(background_tasks: BackgroundTasks) -> dict[str, object]:
        return {"task_id": background_tasks.add_task(print, "hello")}

    return app


def test_install_after_the_hook_was_reset_still_gives_managed_tasks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = TaskManager()
    with TestClient(make_app(first)) as client:
        assert isinstance(client.post("/add").json()["task_id"], str)
    # a fixture or another library puts FastAPI's original class back
    monkeypatch.setattr(dependency_utils, "BackgroundTasks", StarletteBackgroundTasks)
    second = TaskManager()
    with TestClient(make_app(second)) as client:
        task_id = client.post("/add").json()["task_id"]
        assert isinstance(task_id, str), "install() silently gave plain BackgroundTasks"
        assert second.store.get(task_id) is not None


def test_an_installed_app_recovers_when_the_hook_is_reset_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task_manager = TaskManager()
    with TestClient(make_app(task_manager)) as client:
        assert isinstance(client.post("/add").json()["task_id"], str)
        monkeypatch.setattr(dependency_utils, "BackgroundTasks", StarletteBackgroundTasks)
        task_id = client.post("/add").json()["task_id"]
        assert isinstance(task_id, str)
        assert task_manager.store.get(task_id) is not None


def test_an_app_served_by_another_manager_is_refused_with_a_taskflow_error() -> None:
    app = make_app(TaskManager())
    with pytest.raises(AppInstallError, match=r"app\.state\.taskflow_manager") as refused:
        TaskManager().install(app)
    assert isinstance(refused.value, TaskflowError) and isinstance(refused.value, RuntimeError)
    app.state.taskflow_manager.install(app)  # its own manager again: nothing to do
