"""A manager nobody entered, used first by several coroutines at once.

A startup handler registered with ``FastAPI(on_startup=[...])`` adds a task and starts
it, while a read asks the store: each is the engine's first use on the loop. They must
share one start — one opened store (and its heartbeat fork), one set of background
loops — and ``shutdown()`` must close everything that was opened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from durable_stores import DURABLE, isolated_url

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager, TaskStatus

pytestmark = pytest.mark.anyio


@pytest.fixture(params=sorted(DURABLE))
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from isolated_url(request.param, tmp_path)


class OpenedBackends:
    """Records every backend of one class that is opened and closed (forks included)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, backend_class: type[Any]) -> None:
        self.opened: list[Any] = []
        self.closed: list[Any] = []
        real_open, real_close = backend_class.open, backend_class.close

        async def open_(backend: Any) -> None:
            await real_open(backend)
            self.opened.append(backend)

        async def close(backend: Any) -> None:
            if any(backend is seen for seen in self.opened):
                self.closed.append(backend)
            await real_close(backend)

        monkeypatch.setattr(backend_class, "open", open_)
        monkeypatch.setattr(backend_class, "close", close)

    def all_closed(self) -> bool:
        """Whether every opened backend was closed."""
        return all(any(backend is done for done in self.closed) for backend in self.opened)


async def test_first_uses_at_once_open_the_store_once(
    durable_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What one first use opens: the store and, on shared stores, its heartbeat fork.
    manager = TaskManager(durable_url)
    alone = OpenedBackends(monkeypatch, type(manager.backend))
    try:
        await manager.store.aquery()
    finally:
        await manager.shutdown()
        monkeypatch.undo()

    manager = TaskManager(durable_url)
    together = OpenedBackends(monkeypatch, type(manager.backend))

    @manager.task(name="first_use")
    def first_use() -> str:
        return "done"

    try:
        tasks = ManagedBackgroundTasks(manager)
        task_id = tasks.add_task(first_use)  # schedules its flush: one more first use
        # The task's run and three reads, all at once, as in a startup handler.
        await asyncio.gather(tasks(), *(manager.store.aquery() for _ in range(3)))
        beating = [task for task in asyncio.all_tasks() if task.get_name() == "taskflow-heartbeat"]
        assert len(beating) == 1  # one set of background loops
        record = await manager.store.aget(task_id)
        assert record is not None and record.status is TaskStatus.SUCCESS
        assert record.result == "done"
    finally:
        await manager.shutdown()
    assert len(together.opened) == len(alone.opened)
    assert together.all_closed()  # shutdown() closed what was opened
