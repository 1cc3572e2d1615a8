"""Idempotency keys through the engine, with real threads racing."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager, TaskStatus

pytestmark = pytest.mark.anyio


async def test_racing_threads_with_one_key_get_one_task() -> None:
    tm = TaskManager()
    runs: list[int] = []

    @tm.task()
    def charge(n: int) -> None:
        runs.append(n)

    async with tm:
        managed = [ManagedBackgroundTasks(tm) for _ in range(16)]

        def add(i: int) -> str:
            return managed[i].add_task(charge, i, idempotency_key="order-1")

        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(16) as pool:
            ids = await asyncio.gather(*(loop.run_in_executor(pool, add, i) for i in range(16)))
        assert len(set(ids)) == 1
        for m in managed:
            await m()
    assert len(runs) == 1
    assert sum(len(m.tasks) for m in managed) == 1


async def test_a_failed_task_releases_its_key_and_a_success_keeps_it() -> None:
    tm = TaskManager()
    outcomes = iter([RuntimeError("boom"), None, None])

    @tm.task()
    def send(order: int) -> None:
        error = next(outcomes)
        if error:
            raise error

    async with tm:
        managed = ManagedBackgroundTasks(tm)
        failed = managed.add_task(send, 1, idempotency_key="send-1")
        await managed()
        assert (await tm.store.aget(failed)).status is TaskStatus.FAILED  # type: ignore[union-attr]
        fresh = managed.add_task(send, 1, idempotency_key="send-1")
        assert fresh != failed
        await managed.tasks[-1]()
        assert (await tm.store.aget(fresh)).status is TaskStatus.SUCCESS  # type: ignore[union-attr]
        assert managed.add_task(send, 1, idempotency_key="send-1") == fresh
        assert len(managed.tasks) == 2  # the duplicate enqueued nothing


async def test_keyed_add_from_an_async_route_context_works() -> None:
    """On the loop thread the keyed check runs through the private bridge loop."""
    tm = TaskManager()

    @tm.task()
    def job() -> None:
        pass

    async with tm:
        managed = ManagedBackgroundTasks(tm)
        first = managed.add_task(job, idempotency_key="k")
        assert managed.add_task(job, idempotency_key="k") == first
        assert tm.store.find_by_key("k").task_id == first  # type: ignore[union-attr]
