"""A shutdown ends the group commit's writes before it closes the store.

A task's outcome goes to the store in a write shared with other tasks (the group
commit). When a shutdown gives up on a running task (its ``timeout`` ran out while the
task's outcome was being written behind another transaction's row lock), the write
itself used to go on with nobody waiting for it: past ``shutdown()``, after the store
was closed, or destroyed with the event loop inside an open transaction, whose locks
then held up the next one to touch the table (a ``DROP TABLE`` waiting a day on MariaDB).

A shutdown of a manager whose store never answered does not try to write at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager, TaskStatus
from fastapi_taskflow.clock import SystemClock

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["postgres", "mysql"])
def server_place(request: pytest.FixtureRequest) -> Any:
    """An isolated place on PostgreSQL, then on MySQL/MariaDB."""
    return request.getfixturevalue(f"{request.param}_place")


def group_writes() -> list[asyncio.Task[Any]]:
    """The group commit's writes not over yet on this loop."""
    return [
        task
        for task in asyncio.all_tasks()
        if task.get_name() == "taskflow-group-commit" and not task.done()
    ]


async def test_shutdown_ends_a_write_nobody_waits_for(
    server_place: Any, statement_blocked: Callable[..., Awaitable[None]]
) -> None:
    manager = TaskManager(server_place.manager_url())
    started = {"held_back": asyncio.Event(), "behind": asyncio.Event()}
    release = {"held_back": asyncio.Event(), "behind": asyncio.Event()}
    returned = asyncio.Event()

    @manager.task(name="held_back")
    async def held_back() -> str:
        started["held_back"].set()
        await release["held_back"].wait()
        return "done"

    @manager.task(name="behind")
    async def behind() -> str:
        started["behind"].set()
        await release["behind"].wait()
        returned.set()
        return "done"

    observer = server_place.backend(SystemClock())
    await observer.open()
    await manager.startup()
    running: list[asyncio.Future[None]] = []
    try:
        ids = {}
        for function in (held_back, behind):
            tasks = ManagedBackgroundTasks(manager)
            ids[function.__name__] = tasks.add_task(function)
            running.append(asyncio.ensure_future(tasks()))
        for event in started.values():
            await asyncio.wait_for(event.wait(), 10)
        table = observer.tables.tasks
        async with observer.engine.connect() as other:
            # Another transaction holds the first task's row: its SUCCESS write waits.
            held = table.c.task_id == ids["held_back"]
            await other.execute(select(table).where(held).with_for_update())
            release["held_back"].set()
            # PostgreSQL: the grouped UPDATE; MySQL: the SELECT ... FOR UPDATE before it
            await statement_blocked(
                observer,
                f"%{table.name}%FOR UPDATE" if observer.kind == "mysql" else f"%{table.name}%",
            )
            # The second task's outcome waits for the next write (one at a time here).
            release["behind"].set()
            await asyncio.wait_for(returned.wait(), 10)
            await manager.shutdown(timeout=0.2)
            assert group_writes() == []  # ended before shutdown() returned, none after
            await other.rollback()
        await asyncio.gather(*running, return_exceptions=True)
        record = await observer.get(ids["held_back"])
        assert record is not None and record.status is TaskStatus.RUNNING  # nothing written
    finally:
        await manager.shutdown()
        for future in running:
            future.cancel()
        await observer.close()


async def test_a_store_that_never_answered_is_shut_down_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A durable store unreachable from startup to shutdown (here a SQLite file in a
    folder that does not exist) holds nothing of this instance's: every task was
    refused. The shutdown then neither hands tasks back nor deletes a heartbeat, and
    logs no error with a traceback for trying."""
    caplog.set_level(logging.DEBUG, logger="fastapi_taskflow")
    task_manager = TaskManager(backend=f"sqlite:///{tmp_path / 'missing' / 'tasks.db'}")
    async with task_manager:
        assert "unreachable at startup" in caplog.text
    assert "could not hand" not in caplog.text
    with_traceback = [r.getMessage() for r in caplog.records if r.exc_info or r.exc_text]
    assert with_traceback == []
