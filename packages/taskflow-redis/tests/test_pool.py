"""A burst waits for a pooled connection instead of being called an outage (issue 9 #4).

redis-py's default pool refuses at once when all its connections are in use; taskflow
used to report that as "store unavailable" (503s on a healthy server). A URL backend
now waits (bounded) for a free connection; "unavailable" stays for a server that does
not answer.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import BackgroundTasks, FastAPI

from fastapi_taskflow import TaskManager, TaskStatus
from taskflow_redis import RedisBackend
from taskflow_redis.connection import POOL_MAX_CONNECTIONS

from .conftest import unique_prefix

pytestmark = pytest.mark.anyio


async def test_more_concurrent_calls_than_connections_all_succeed(
    backend: RedisBackend,
) -> None:
    created = await backend.create_many([])
    assert created == []
    calls = [backend.get(f"missing-{n}") for n in range(POOL_MAX_CONNECTIONS * 4)]
    assert await asyncio.gather(*calls) == [None] * len(calls)


async def test_a_burst_of_requests_is_not_answered_503(redis_url: str) -> None:
    prefix = unique_prefix()
    tm = TaskManager(f"{redis_url}?prefix={prefix}")
    app = FastAPI()
    tm.install(app)
    done: list[int] = []

    @tm.task(name="burst_job")
    async def job(n: int) -> None:
        await asyncio.sleep(0.01)
        done.append(n)

    @app.post("/add/{n}")
    async def add(n: int, background_tasks: BackgroundTasks) -> dict[str, str]:
        return {"id": background_tasks.add_task(job, n)}  # type: ignore[func-returns-value]

    @app.post("/keyed/{n}")
    def keyed(n: int, background_tasks: BackgroundTasks) -> dict[str, str]:
        key = f"k{n}"
        return {"id": background_tasks.add_task(job, n, idempotency_key=key)}  # type: ignore[func-returns-value,call-arg]

    transport = httpx.ASGITransport(app=app)
    try:
        async with tm, httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            answers = await asyncio.gather(
                *(http.post(f"/add/{n}") for n in range(300)),
                *(http.post(f"/keyed/{n}") for n in range(300, 500)),
            )
            codes = [a.status_code for a in answers]
            assert codes.count(200) == len(codes), {c: codes.count(c) for c in set(codes)}
            stats = await tm.store.astats()
            assert stats.by_status.get(TaskStatus.SUCCESS) == 500
            assert sorted(done) == list(range(500))
    finally:
        cleanup = RedisBackend(redis_url, prefix=prefix)
        await cleanup.open()
        await cleanup.delete_all()
        await cleanup.close()
