"""A task added by a script (no event loop, the manager never started) is stored before
``add_task()`` returns its id, on every durable store: the script may exit at once,
and an app instance started later runs it. Before, the record waited in the write
buffer for a start that never came and was lost when the script ended, though its id
had been handed out. A store the script cannot reach is an error, not an id.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from durable_stores import DURABLE, isolated_url
from store_servers import free_port

from fastapi_taskflow import TaskManager, TaskStatus

pytestmark = pytest.mark.anyio

Wait = Callable[..., Awaitable[Any]]

SCRIPT = textwrap.dedent(
    """
    import sys
    from fastapi_taskflow import BackendUnavailableError, TaskManager

    task_manager = TaskManager(backend=sys.argv[1])

    @task_manager.task(name="tests.script.record")
    async def record(label: str) -> None: ...

    try:
        print(task_manager.add_task(record, sys.argv[2]))
    except BackendUnavailableError as exc:
        print(f"refused: {exc}")
    """
)


@pytest.fixture(params=sorted(DURABLE))
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from isolated_url(request.param, tmp_path)


def run_script(url: str, label: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, url, label],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


async def test_a_script_s_task_is_stored_and_runs_on_an_app_started_later(
    durable_url: str, wait_for: Wait
) -> None:
    task_id = run_script(durable_url, "nightly")  # the script's process has ended
    app_side = TaskManager(backend=durable_url, poll_interval=0.05)
    ran: list[str] = []

    @app_side.task(name="tests.script.record")
    async def record(label: str) -> None:
        ran.append(label)

    async with app_side:

        async def succeeded() -> bool:
            found = await app_side.store.aget(task_id)
            return found is not None and found.status is TaskStatus.SUCCESS

        await wait_for(succeeded, timeout=15)
    assert ran == ["nightly"]


@pytest.mark.parametrize("scheme", ["postgresql", "redis"])
def test_a_script_that_cannot_reach_the_store_gets_an_error_not_an_id(scheme: str) -> None:
    database = "0" if scheme == "redis" else "test"
    said = run_script(f"{scheme}://127.0.0.1:{free_port()}/{database}", "never")
    assert said.startswith("refused: "), said
