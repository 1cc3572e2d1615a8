"""Events reach the other instances in batches, off the tasks' path, and none is lost
at shutdown.

On a shared store every lifecycle event and every ``task_log()`` line is published for
the other instances (their dashboards, ``events()`` streams, remote observers). Each
was one write of its own, awaited by the task: a task logging a line per row of an
import cost the store a write per line (200,000 lines: 65 s on SQLite, more than five
minutes on MySQL), and durable requests ran at a third of their speed on PostgreSQL.
Now the events of a turn of the event loop go in one ``publish_many`` while the task
goes on. Two instances (two ``TaskManager``s with their own connections) share a real
store here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from durable_stores import DURABLE, isolated_url

from fastapi_taskflow import (
    LifecycleEvent,
    LogEvent,
    ManagedBackgroundTasks,
    TaskManager,
    TaskStatus,
    task_log,
)

pytestmark = pytest.mark.anyio
LINES = 12_000


@pytest.fixture(params=sorted(DURABLE))
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from isolated_url(request.param, tmp_path)


async def import_rows(rows: int) -> None:
    for row in range(rows):
        task_log(f"row {row} imported", row=row)


def import_rows_in_a_thread(rows: int) -> None:
    for row in range(rows):
        task_log(f"row {row} imported", row=row)


def count_publications(backend: Any) -> list[int]:
    """Count the events ``backend`` is asked to publish, one entry per write."""
    writes: list[int] = []
    publish, publish_many = backend.publish, backend.publish_many

    async def one(event: Any) -> None:
        writes.append(1)
        await publish(event)

    async def many(events: Any) -> None:
        writes.append(len(events))
        await publish_many(events)

    backend.publish, backend.publish_many = one, many
    return writes


@pytest.mark.parametrize("function", [import_rows, import_rows_in_a_thread])
async def test_a_chatty_task_is_published_in_batches_and_whole(
    durable_url: str, function: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """12,000 lines logged by a task on instance A (``async def``, or ``def`` in a
    thread) reach instance B's ``events()`` stream, every one and in order, followed by
    the task's SUCCESS, though A shut down right after the task ended; A published them
    in a few writes, not 12,000. Nothing is dropped on the way, and nothing warns: the
    engine's own watcher of cancellation requests, which reads every event, fell 10,000
    behind and warned about "an events() stream" nobody had opened."""
    a = TaskManager(durable_url, instance_id="instance-a")
    b = TaskManager(durable_url, instance_id="instance-b")
    job = a.task()(function)
    b.task()(function)
    writes = count_publications(a.backend)
    async with b, b.events(backlog=2 * LINES) as stream:
        async with a:
            tasks = ManagedBackgroundTasks(a)
            task_id = tasks.add_task(job, LINES)
            await tasks()
        lines: list[str] = []
        with anyio.fail_after(60):
            async for event in stream:
                if event.task_id != task_id:
                    continue
                if isinstance(event, LogEvent):
                    lines.append(event.message)
                elif isinstance(event, LifecycleEvent) and event.status is TaskStatus.SUCCESS:
                    break
    assert lines == [f"row {row} imported" for row in range(LINES)]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert sum(writes) >= LINES + 1
    assert len(writes) <= 20, f"{len(writes)} writes for {sum(writes)} events"
