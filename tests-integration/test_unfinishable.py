"""Records nobody can finish end terminal, saying why (issue 9 #6).

Each record is written straight into the real store as another instance (now dead)
would have left it, then a live instance finds it on its queue or adopts it from its
dead owner. Before, a corrupt record stayed PENDING in ``stats()`` forever, a record without
stored arguments was requeued every second with a misleading warning, and a task of a
function nobody can find by name stayed PENDING forever.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from durable_stores import DURABLE, isolated_url

from fastapi_taskflow import TaskManager, TaskRecord, TaskStatus
from fastapi_taskflow.limits import UNKNOWN_TASK_GRACE

pytestmark = pytest.mark.anyio

Wait = Callable[..., Awaitable[Any]]


@pytest.fixture(params=list(DURABLE))
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from isolated_url(request.param, tmp_path)


def record(tm: TaskManager, task_id: str, func_name: str, **fields: Any) -> TaskRecord:
    now = tm.backend.clock.now()
    fields.setdefault("created_at", now)
    fields.setdefault("updated_at", fields["created_at"])
    fields.setdefault("args", [])
    fields.setdefault("kwargs", {})
    return TaskRecord(task_id=task_id, func_name=func_name, **fields)


async def corrupt(backend: Any, task_id: str) -> None:
    """Break the stored record of ``task_id`` the way a hand edit or a bad migration would."""
    if hasattr(backend, "tables"):
        from sqlalchemy import text

        async with backend.engine.begin() as conn:
            await conn.execute(
                text(
                    f"UPDATE {backend.tables.tasks.fullname} SET args = '{{broken' WHERE task_id = :t"
                ),
                {"t": task_id},
            )
    else:
        await backend.client.hset(backend._keys.task(task_id), "d", "{broken json")


async def test_records_nobody_can_finish_end_failed(durable_url: str, wait_for: Wait) -> None:
    tm = TaskManager(durable_url, liveness_seconds=1, poll_interval=0.2)

    @tm.task(name="known_job")
    def known_job() -> None:
        pass

    async with tm:
        backend = tm.backend
        old = backend.clock.now() - UNKNOWN_TASK_GRACE - timedelta(minutes=1)
        cases = {
            "corrupt": record(tm, "corrupt", "known_job"),
            "no_args": record(tm, "no_args", "known_job", args=None, kwargs=None),
            "lambda": record(tm, "lambda", "app.<lambda>"),
            "closure": record(tm, "closure", "app.make.<locals>.job"),
            "main": record(tm, "main", "__main__.job"),
            "gone": record(tm, "gone", "app.removed_job", created_at=old),
            "recent": record(tm, "recent", "app.other_deploy_job"),
            "adopted_corrupt": record(tm, "adopted_corrupt", "known_job", owner="dead-instance"),
        }
        await backend.create_many(list(cases.values()))
        await corrupt(backend, "corrupt")
        await corrupt(backend, "adopted_corrupt")
        for task_id in cases:
            if task_id != "adopted_corrupt":
                await backend.enqueue(task_id, queue="default")
        tm._engine.worker("default").wake()

        async def settled() -> bool:
            stats = await backend.stats()
            return stats.by_status.get(TaskStatus.FAILED, 0) == 7

        await wait_for(settled, timeout=30)
        for task_id, fragment in [
            ("no_args", "arguments were not stored"),
            ("lambda", "it is a lambda"),
            ("closure", "defined inside another function"),
            ("main", "defined in __main__"),
            ("gone", "no instance had the function 'app.removed_job' registered"),
        ]:
            stored = await backend.get(task_id)
            assert stored is not None and stored.status is TaskStatus.FAILED, task_id
            assert fragment in (stored.error or ""), (task_id, stored.error)
        recent = await backend.get("recent")
        assert recent is not None and recent.status is TaskStatus.PENDING
        stats = await backend.stats()
        assert stats.by_status.get(TaskStatus.PENDING) == 1  # "recent" waits for its instance
        assert stats.by_status.get(TaskStatus.RUNNING, 0) == 0
