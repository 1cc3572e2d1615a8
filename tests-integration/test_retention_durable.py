"""Retention on every durable backend (issue 9 #7): finished tasks older than
``TaskManager(retention=...)`` are deleted in the background through ``Store.purge``;
active ones are kept."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from durable_stores import DURABLE, isolated_url

from fastapi_taskflow import TaskManager, TaskStatus

pytestmark = pytest.mark.anyio

Wait = Callable[..., Awaitable[Any]]


@pytest.fixture(params=list(DURABLE))
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from isolated_url(request.param, tmp_path)


async def test_finished_tasks_are_purged_in_the_background(
    durable_url: str, wait_for: Wait
) -> None:
    tm = TaskManager(durable_url, retention=timedelta(seconds=1))
    release = asyncio.Event()

    @tm.task(name="quick_job")
    async def quick(n: int) -> int:
        return n

    @tm.task(name="slow_job")
    async def slow() -> None:
        await release.wait()

    async with tm:
        active = tm.add_task(slow)
        ids = [tm.add_task(quick, n) for n in range(20)]

        async def all_purged() -> bool:
            # purge deletes finished tasks only: a task gone has run and finished.
            return [await tm.store.aget(t) for t in ids] == [None] * len(ids)

        await wait_for(all_purged, timeout=30)
        stats = await tm.store.astats()
        assert stats.by_status == {TaskStatus.RUNNING: 1}
        record = await tm.store.aget(active)
        assert record is not None and record.status is TaskStatus.RUNNING
        release.set()
