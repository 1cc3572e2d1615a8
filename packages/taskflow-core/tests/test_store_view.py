"""task_manager.store works from sync routes, async code, and outside any loop."""

from __future__ import annotations

import asyncio

import pytest

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager, TaskStatus
from fastapi_taskflow.errors import InvalidOperationError

pytestmark = pytest.mark.anyio


def job(n: int) -> int:
    return n


async def test_reads_from_a_worker_thread_the_loop_and_async_code() -> None:
    tm = TaskManager()
    async with tm:
        managed = ManagedBackgroundTasks(tm)
        ids = [managed.add_task(job, n, tags={"batch": "b1"}) for n in range(5)]
        await managed()
        from_thread = await asyncio.to_thread(tm.store.get, ids[0])
        on_loop = tm.store.get(ids[1])  # blocking form on the loop thread: bridge
        awaited = await tm.store.aget(ids[2])
        for record in (from_thread, on_loop, awaited):
            assert record is not None and record.status is TaskStatus.SUCCESS
        page = await asyncio.to_thread(tm.store.query, tags={"batch": "b1"}, limit=3)
        assert len(page.items) == 3 and page.next_cursor
        rest = await tm.store.aquery(tags={"batch": "b1"}, cursor=page.next_cursor)
        assert {r.task_id for r in page.items + rest.items} == set(ids)
        stats = await asyncio.to_thread(tm.store.stats)
        assert stats.by_status == {TaskStatus.SUCCESS: 5} and stats.total == 5
        assert (await tm.store.astats()).total == 5


def test_unknown_ids_are_none_and_reads_work_without_any_loop() -> None:
    tm = TaskManager()
    assert tm.store.get("no-such-task") is None
    task_id = ManagedBackgroundTasks(tm).add_task(job, 1)
    record = tm.store.get(task_id)
    assert record is not None and record.status is TaskStatus.PENDING
    assert record.to_dict()["status"] == "pending"
    assert tm.store.stats().by_status == {TaskStatus.PENDING: 1}


async def test_a_filter_query_does_not_have_is_an_error_not_an_unfiltered_list() -> None:
    tm = TaskManager()

    @tm.task()
    async def job() -> None:
        return None

    async with tm:
        tasks = ManagedBackgroundTasks(tm)
        tasks.add_task(job)
        await tasks()
        # ``status=`` (for ``statuses=``) used to be ignored: every task came back
        with pytest.raises(InvalidOperationError, match=r"status: .*the filters are statuses="):
            tm.store.query(status="failed")
        with pytest.raises(InvalidOperationError, match="limit"):
            await tm.store.aquery(limit=0)
        assert tm.store.query(statuses=[TaskStatus.FAILED]).items == []
        assert len((await tm.store.aquery(statuses=[TaskStatus.SUCCESS])).items) == 1
