"""A one-off firing's ``run_key`` is taken, refused and found alike on every backend.

A run key is an idempotency key of sorts: any text of 1 to ``RUN_KEY_MAX`` (1,024)
characters every store can hold. Before, SQL backends refused a key longer than 238
characters with a ``ValueError`` about lock names (memory and Redis took it); a key with
a NUL was armed on SQLite, MySQL and Redis and could then not be cancelled (the firing
stayed, holding text no store should hold), and PostgreSQL refused it with a driver
error.
"""

from __future__ import annotations

import durable_stores
import pytest

from fastapi_taskflow import ScheduleError, TaskManager, TaskStatus
from fastapi_taskflow.one_off import RUN_KEY_MAX

pytestmark = pytest.mark.anyio

any_url = durable_stores.any_url  # memory://, then each durable backend


async def test_a_long_run_key_is_armed_moved_and_cancelled(any_url: str) -> None:
    tm = TaskManager(any_url)

    @tm.task(name="reminder")
    async def reminder() -> None:
        return None

    key = "reminder:" + "é" * (RUN_KEY_MAX - len("reminder:"))
    async with tm:
        first = await tm.schedule_once(reminder, delay=3600, run_key=key)
        moved = await tm.schedule_once(reminder, delay=7200, run_key=key)
        pending = [item for item in await tm.list_scheduled() if item.run_key == key]
        assert [item.task_id for item in pending] == [moved]
        assert await tm.cancel_scheduled(key) is True
        assert await tm.cancel_scheduled(key) is False
        for task_id in (first, moved):
            record = await tm.store.aget(task_id)
            assert record is not None and record.status is TaskStatus.CANCELLED


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("k" * (RUN_KEY_MAX + 1), "run_key must be 1 to 1024 characters"),
        ("a\x00b", "NUL character or a lone surrogate"),
        ("k\ud800", "NUL character or a lone surrogate"),
        ("", "non-empty string"),
    ],
    ids=["too-long", "nul", "surrogate", "empty"],
)
async def test_a_run_key_no_store_can_hold_is_refused_and_never_armed(
    any_url: str, key: str, message: str
) -> None:
    tm = TaskManager(any_url)

    @tm.task(name="reminder")
    async def reminder() -> None:
        return None

    async with tm:
        with pytest.raises(ScheduleError, match=message):
            await tm.schedule_once(reminder, delay=3600, run_key=key)
        assert await tm.list_scheduled() == []
        if key:  # no firing can have it: nothing to cancel (an empty one is an error)
            assert await tm.cancel_scheduled(key) is False
