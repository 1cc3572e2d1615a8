"""A defect in taskflow's own code around a task's call never leaves the task RUNNING.

What the task's call raises is the task's failure; anything taskflow's code raises
while recording the outcome (two such defects were found: a retry wait that overflowed
a float, a result whose ``repr()`` raised) ended the attempt with the task RUNNING for
ever and, in a request, skipped the background tasks after it. Now the task ends
INTERRUPTED with an error saying so, the defect is logged with its traceback, and the
next tasks run. The defect is simulated here by making ``executor._success`` raise:
no known input reaches this path any more.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager, TaskStatus
from fastapi_taskflow import executor as executor_module

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'tasks.db'}"


async def test_a_defect_recording_an_outcome_ends_the_task_interrupted(
    url: str, monkeypatch: pytest.MonkeyPatch, eventually: Any, caplog: pytest.LogCaptureFixture
) -> None:
    tm = TaskManager(backend=url)

    @tm.task(name="broken")
    async def broken() -> str:
        return "result"

    @tm.task(name="after")
    async def after() -> str:
        return "ran"

    real_success = executor_module._success

    def defect(*args: Any) -> Any:
        if args[1] == "result":  # the first task's outcome only
            raise RuntimeError("simulated defect")
        return real_success(*args)

    monkeypatch.setattr(executor_module, "_success", defect)
    async with tm:
        tasks = ManagedBackgroundTasks(tm)
        first = tasks.add_task(broken)
        second = tasks.add_task(after)
        await tasks()  # does not raise: the next task runs
        await eventually(
            lambda: tm.store.get(first).status is TaskStatus.INTERRUPTED,  # type: ignore[union-attr]
            timeout=10,
        )
        ended = tm.store.get(first)
        assert ended is not None and ended.error is not None
        assert ended.error.startswith(
            "taskflow failed to record this task's outcome (RuntimeError: simulated defect)"
        )
        await eventually(
            lambda: tm.store.get(second).status is TaskStatus.SUCCESS,  # type: ignore[union-attr]
            timeout=10,
        )
    assert "recording the outcome of task" in caplog.text
