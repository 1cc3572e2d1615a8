"""A record the store refuses fails alone: it never blocks later requests (issue 9 #1)
nor fails the requests batched with it (issue 9 #2).

The real database server refuses the record (a CHECK constraint, or a trigger on
SQLite, on PENDING rows of the function ``poison_job``): what taskflow's own checks
cannot foresee. Every good request still answers 200 and its task runs; the refused
task ends FAILED with the store's reason; nothing stays buffered or PENDING.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from durable_stores import SQL, isolated_url, refuse_pending
from fastapi import BackgroundTasks, FastAPI

from fastapi_taskflow import TaskManager, TaskStatus

pytestmark = pytest.mark.anyio

Wait = Callable[..., Awaitable[Any]]


@pytest.fixture(params=SQL)
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from isolated_url(request.param, tmp_path)


def make_app(url: str) -> tuple[TaskManager, FastAPI, list[int]]:
    tm = TaskManager(url, liveness_seconds=5)
    app = FastAPI()
    tm.install(app)
    done: list[int] = []

    @tm.task(name="good_job")
    async def good(n: int) -> None:
        done.append(n)

    @tm.task(name="poison_job")
    async def poison() -> None:
        pass

    @app.post("/good/{n}")
    def add_good(n: int, background_tasks: BackgroundTasks) -> dict[str, str]:
        return {"id": background_tasks.add_task(good, n)}  # type: ignore[func-returns-value]

    @app.post("/poison")
    def add_poison(background_tasks: BackgroundTasks) -> dict[str, str]:
        return {"id": background_tasks.add_task(poison)}  # type: ignore[func-returns-value]

    app.state.poison = poison
    return tm, app, done


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def failed_record(tm: TaskManager, task_id: str) -> Any:
    record = await tm.store.aget(task_id)
    return record if record is not None and record.status is TaskStatus.FAILED else None


async def test_a_refused_task_from_outside_a_request_blocks_no_later_request(
    sql_url: str, wait_for: Wait
) -> None:
    tm, app, done = make_app(sql_url)
    async with tm:
        await refuse_pending(tm.backend, "poison")
        poison_id = tm.add_task(app.state.poison)  # from a startup hook, say
        async with client(app) as http:
            answers = await asyncio.gather(*(http.post(f"/good/{n}") for n in range(40)))
        assert [a.status_code for a in answers] == [200] * 40, answers[0].text
        await wait_for(lambda: len(done) == 40, timeout=30)
        record = await wait_for(lambda: failed_record(tm, poison_id), timeout=30)
        assert "refused" in (record.error or "")
        assert len(tm._engine.pending) == 0
        stats = await tm.store.astats()
        assert stats.by_status.get(TaskStatus.PENDING, 0) == 0
        assert stats.by_status.get(TaskStatus.SUCCESS) == 40


async def test_a_refused_request_fails_alone_among_concurrent_ones(
    sql_url: str, wait_for: Wait
) -> None:
    tm, app, done = make_app(sql_url)
    async with tm:
        await refuse_pending(tm.backend, "poison")
        async with client(app) as http:
            calls = [http.post(f"/good/{n}") for n in range(100)]
            calls[10:10] = [http.post("/poison") for _ in range(5)]
            answers = await asyncio.gather(*calls)
        poisoned = [a for a in answers if a.request.url.path == "/poison"]
        good = [a for a in answers if a.request.url.path != "/poison"]
        assert [a.status_code for a in good] == [200] * 100
        assert [a.status_code for a in poisoned] == [500] * 5
        assert all("refused" in a.json()["detail"] for a in poisoned)
        await wait_for(lambda: len(done) == 100, timeout=30)
        assert sorted(done) == list(range(100))
        page = await tm.store.aquery(func_name="poison_job")
        assert [r.status for r in page.items] == [TaskStatus.FAILED] * 5
        stats = await tm.store.astats()
        assert stats.by_status.get(TaskStatus.PENDING, 0) == 0
        assert stats.by_status.get(TaskStatus.RUNNING, 0) == 0


async def test_a_refused_record_fails_alone_among_status_changes_written_with_it(
    sql_url: str, wait_for: Wait
) -> None:
    """The group commit writes new records together with the starts and finishes of
    running tasks. A record the server refuses in such a write fails alone: the
    finishes written with it land, and the other new records are stored and run."""
    tm, app, done = make_app(sql_url)
    gate = asyncio.Event()

    @tm.task(name="gated_job")
    async def gated(n: int) -> None:
        await gate.wait()
        done.append(n)

    @app.post("/gated/{n}")
    def add_gated(n: int, background_tasks: BackgroundTasks) -> dict[str, str]:
        return {"id": background_tasks.add_task(gated, n)}  # type: ignore[func-returns-value]

    async with tm:
        await refuse_pending(tm.backend, "poison")
        backend = tm._engine.backend
        mixed: list[bool] = []
        write_many = backend.write_many

        async def watched(creates: Any, transitions: Any) -> Any:
            try:
                return await write_many(creates, transitions)
            except Exception:
                mixed.append(True)  # a combined write the server refused as a whole
                raise

        backend.write_many = watched  # type: ignore[method-assign]
        async with client(app) as http:
            running = [asyncio.create_task(http.post(f"/gated/{n}")) for n in range(20)]

            async def all_running() -> bool:
                stats = await tm.store.astats()
                return stats.by_status.get(TaskStatus.RUNNING, 0) == 20

            await wait_for(all_running, timeout=30)
            engine = tm._engine
            group = engine._group_commit
            assert group is not None
            async with engine.pending.write_slot():  # the next write waits for it
                gate.set()  # the finishes and the next requests' records gather
                calls = [http.post(f"/good/{n}") for n in range(100, 120)]
                calls[5:5] = [http.post("/poison") for _ in range(3)]
                requests = asyncio.gather(*calls)
                await wait_for(
                    lambda: len(group._changes) == 20 and len(engine.pending) == 23, timeout=30
                )
            answers = await requests
            gated_answers = await asyncio.gather(*running)
        assert [a.status_code for a in gated_answers] == [200] * 20
        poisoned = [a for a in answers if a.request.url.path == "/poison"]
        good = [a for a in answers if a.request.url.path != "/poison"]
        assert [a.status_code for a in good] == [200] * 20
        assert [a.status_code for a in poisoned] == [500] * 3
        await wait_for(lambda: len(done) == 40, timeout=30)
        assert sorted(done) == list(range(20)) + list(range(100, 120))
        assert mixed, "no combined write carried the refused record"
        stats = await tm.store.astats()
        assert stats.by_status == {TaskStatus.SUCCESS: 40, TaskStatus.FAILED: 3}
