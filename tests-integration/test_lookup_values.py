"""Looking a task up, or filtering the task list, by a value no task can have finds
nothing, the same on every backend.

An id or an idempotency key comes from outside: a URL (``/api/tasks/a%00b``), a command
line, a client's header. One holding a NUL or a lone surrogate can belong to no task
(``add_task()`` refuses such a key), yet PostgreSQL, MySQL, SQLite's and Redis' drivers
each refused the value itself with an error of their own, where memory answered None. A
value that is not a string is the caller's mistake: one clear error, before any backend
sees it. Nothing already accepted is lost either way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import durable_stores
import httpx
import pytest
from fastapi import FastAPI

from fastapi_taskflow import (
    InvalidOperationError,
    ManagedBackgroundTasks,
    TaskManager,
    TaskNotFoundError,
    TaskStatus,
)
from fastapi_taskflow.admin import TaskAdmin

pytestmark = pytest.mark.anyio

any_url = durable_stores.any_url  # memory://, then each durable backend

UNHOLDABLE = ["a\x00b", "\ud800", "k\udfff\x00"]


def _manager(url: str) -> tuple[TaskManager, Callable[[], Awaitable[str]]]:
    tm = TaskManager(url)

    @tm.task(name="job")
    async def job() -> str:
        return "done"

    return tm, job


async def test_an_id_or_key_no_store_can_hold_finds_no_task(any_url: str) -> None:
    tm, job = _manager(any_url)
    async with tm:
        tasks = ManagedBackgroundTasks(tm)
        task_id = tasks.add_task(job, idempotency_key="order-1")
        await tasks()
        for value in [*UNHOLDABLE, task_id + "\x00", "order-1\x00"]:
            assert await tm.store.aget(value) is None
            assert await tm.store.afind_by_key(value) is None
            with pytest.raises(TaskNotFoundError):
                await tm.cancel(value)
        record = await tm.store.aget(task_id)
        assert record is not None and record.status is TaskStatus.SUCCESS
        found = await tm.store.afind_by_key("order-1")
        assert found is not None and found.task_id == task_id


async def test_an_id_or_key_that_is_not_a_string_is_refused_by_name(any_url: str) -> None:
    tm, job = _manager(any_url)
    async with tm:
        tasks = ManagedBackgroundTasks(tm)
        task_id = tasks.add_task(job)
        for value in (5, None, b"order-1", [task_id]):
            with pytest.raises(InvalidOperationError, match="task_id must be a string"):
                await tm.store.aget(value)  # type: ignore[arg-type]
            with pytest.raises(InvalidOperationError, match="idempotency_key must be a string"):
                await tm.store.afind_by_key(value)  # type: ignore[arg-type]
            with pytest.raises(InvalidOperationError, match="task_id must be a string"):
                await tm.cancel(value)  # type: ignore[arg-type]
        await tasks()  # accepted before the bad calls: still runs
        record = await tm.store.aget(task_id)
        assert record is not None and record.status is TaskStatus.SUCCESS


def test_the_blocking_reads_refuse_and_find_alike(any_url: str) -> None:
    tm = TaskManager(any_url)
    with pytest.raises(InvalidOperationError, match="task_id must be a string"):
        tm.store.get(5)  # type: ignore[arg-type]
    with pytest.raises(InvalidOperationError, match="idempotency_key must be a string"):
        tm.store.find_by_key(5)  # type: ignore[arg-type]
    with pytest.raises(InvalidOperationError, match="task_id must be a string"):
        tm.cancel_sync(5)  # type: ignore[arg-type]
    for value in UNHOLDABLE:
        assert tm.store.get(value) is None
        assert tm.store.find_by_key(value) is None


async def test_the_admin_api_finds_nothing_for_an_id_or_filter_with_a_nul(any_url: str) -> None:
    tm = TaskManager(any_url)
    app = FastAPI(lifespan=tm.lifespan)
    TaskAdmin(app, tm)
    async with tm:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
            for method, path in (
                ("GET", "/tasks/api/tasks/a%00b"),
                ("POST", "/tasks/api/tasks/a%00b/retry"),
                ("POST", "/tasks/api/tasks/a%00b/cancel"),
            ):
                answer = await client.request(method, path)
                assert answer.status_code == 404, (method, path, answer.text)
            for search in ("func=a%00b", "queue=%00", "tag=k:a%00", "tag=%00:v", "q=%00"):
                answer = await client.get(f"/tasks/api/tasks?{search}")
                assert answer.status_code == 200, (search, answer.text)
                assert answer.json()["items"] == [], search
