"""``SQLBackend.open()`` is idempotent also for callers at the same time: one engine,
one schema check and (SQLite) one writer thread, and ``close()`` stops all of it."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest

import taskflow_sql.backend
from fastapi_taskflow.clock import SystemClock

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def place(request: pytest.FixtureRequest) -> Any:
    """An isolated place on SQLite, PostgreSQL, then MySQL/MariaDB."""
    return request.getfixturevalue(f"{request.param}_place")


def _writer_threads() -> int:
    return sum(t.name == "taskflow-sqlite-writer" for t in threading.enumerate())


async def test_opens_at_the_same_time_open_once(
    place: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    engines: list[Any] = []
    make_engine = taskflow_sql.backend.make_engine

    def counted(*args: Any, **kwargs: Any) -> Any:
        engine = make_engine(*args, **kwargs)
        engines.append(engine)
        return engine

    monkeypatch.setattr(taskflow_sql.backend, "make_engine", counted)
    writers = _writer_threads()
    backend = place.backend(SystemClock())
    async with anyio.create_task_group() as group:
        for _ in range(4):
            group.start_soon(backend.open)
    try:
        assert len(engines) == 1
        if backend.kind == "sqlite":
            assert _writer_threads() == writers + 1
        assert (await backend.stats()).total == 0  # and it works
    finally:
        await backend.close()
    assert _writer_threads() == writers
