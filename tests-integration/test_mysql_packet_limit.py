"""A value larger than the MySQL/MariaDB server takes fails its task alone.

The server refuses a packet larger than its ``max_allowed_packet`` by closing the
connection, which the driver reports as a lost connection. Taken for an outage, one
request with a large argument made the instance refuse every other request's tasks
(503) and retry the write for ever; a large result left its task RUNNING the same way.
Now the oversized task is refused alone, with a message naming the limit and the fix,
and the store stays available: the request that carried it is answered 500, the
others 200, and their tasks run. A result too large for the server is not stored (the
task still ends SUCCESS, saying so).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from durable_stores import isolated_url
from fastapi import BackgroundTasks, FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from fastapi_taskflow import TaskManager, TaskStatus
from taskflow_sql.urls import parse_url

pytestmark = pytest.mark.anyio

Wait = Callable[..., Awaitable[Any]]


@pytest.fixture
def mysql_url(tmp_path: Path) -> Iterator[str]:
    yield from isolated_url("mysql", tmp_path)


async def _max_packet(url: str) -> int:
    engine = create_async_engine(parse_url(url).url)
    try:
        async with engine.connect() as conn:
            return int(await conn.scalar(text("SELECT @@max_allowed_packet")))
    finally:
        await engine.dispose()


async def test_an_argument_larger_than_the_server_takes_fails_its_task_alone(
    mysql_url: str, wait_for: Wait
) -> None:
    too_large = "x" * (await _max_packet(mysql_url) + 1024)
    tm = TaskManager(mysql_url)
    app = FastAPI()
    tm.install(app)
    done: list[int] = []

    @tm.task(name="tests.packet.measure")
    async def measure(blob: str) -> None:
        done.append(len(blob))

    @app.post("/measure")
    async def add(background_tasks: BackgroundTasks, size: int) -> dict[str, str]:
        blob = too_large if size < 0 else "y" * size
        return {"task_id": background_tasks.add_task(measure, blob)}

    async with tm:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            answers = await asyncio.gather(
                client.post("/measure", params={"size": -1}),
                *(client.post("/measure", params={"size": n}) for n in range(1, 6)),
            )
            later = await client.post("/measure", params={"size": 10})
        refused, *good = answers
        assert refused.status_code == 500, refused.text
        assert "refused" in refused.json()["detail"]
        assert [answer.status_code for answer in [*good, later]] == [200] * 6
        await wait_for(lambda: sorted(done) == [1, 2, 3, 4, 5, 10], timeout=15)

        (failed,) = (await tm.store.aquery(statuses=[TaskStatus.FAILED])).items
        assert failed.error is not None
        assert "max_allowed_packet" in failed.error and "pass a reference" in failed.error
        assert failed.args is None  # the FAILED record could not hold them either


async def test_a_result_larger_than_the_server_takes_is_not_stored(
    mysql_url: str, wait_for: Wait
) -> None:
    limit = await _max_packet(mysql_url)
    tm = TaskManager(mysql_url)

    @tm.task(name="tests.packet.produce")
    async def produce(size: int) -> str:
        return "z" * size

    async with tm:
        big = tm.add_task(produce, limit + 1024)
        small = tm.add_task(produce, 3)

        async def ended() -> bool:
            records = [await tm.store.aget(task_id) for task_id in (big, small)]
            return all(r is not None and r.status is TaskStatus.SUCCESS for r in records)

        await wait_for(ended, timeout=30)
        stored = await tm.store.aget(big)
        assert stored is not None and stored.result is None
        assert stored.error is not None and "max_allowed_packet" in stored.error
        assert (await tm.store.aget(small)).result == "zzz"  # type: ignore[union-attr]
