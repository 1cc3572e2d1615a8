"""Steady load with hostile values mixed in, on every durable backend (issue 9, "Done when").

500 good requests, and 20 of each hostile value from routes and 20 from outside a
request (``task_manager.add_task``), interleaved in waves of concurrent requests:

* every good request answers 2xx and its task succeeds;
* every hostile value is either refused at ``add_task()`` with an ``InvalidTaskError``
  (the app maps it to 400, as ``examples/errors.py`` shows) or accepted and ends in a
  terminal record saying what was replaced (a value the task itself produced);
* afterwards nothing is PENDING or RUNNING, and nothing stays in the write buffer.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from durable_stores import DURABLE, isolated_url
from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import JSONResponse

from fastapi_taskflow import (
    InvalidTaskError,
    TaskflowError,
    TaskManager,
    TaskStatus,
    task_log,
)
from fastapi_taskflow.limits import IDEMPOTENCY_KEY_MAX, PRIORITY_MAX, TAGS_MAX_JSON

pytestmark = pytest.mark.anyio

Wait = Callable[..., Awaitable[Any]]
GOOD = 500
EACH = 20

# kind -> add_task options (besides the function and its argument), refused at add_task().
REFUSED: dict[str, dict[str, Any]] = {
    "surrogate_arg": {"arg": "caf\udce9"},
    "surrogate_tag": {"tags": {"who": "caf\udce9"}},
    "nul_tag": {"tags": {"who": "a\x00b"}},
    "surrogate_key": {"key": "k\ud800"},
    "nul_key": {"key": "k\x00"},
    "long_key": {"key": "k" * (IDEMPOTENCY_KEY_MAX + 1)},
    "priority_int32": {"priority": 2**31},
    "priority_int64": {"priority": 2**63},
    "priority_low": {"priority": -PRIORITY_MAX - 1},
    "big_tags": {"tags": {"blob": "x" * TAGS_MAX_JSON}},
}
# kind -> what the task does; accepted, the store cannot hold what it produces.
OUTCOMES = ("surrogate_result", "nul_error", "nul_log")


@pytest.fixture(params=list(DURABLE))
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from isolated_url(request.param, tmp_path)


def build(url: str) -> tuple[TaskManager, FastAPI, list[int]]:
    tm = TaskManager(url)
    app = FastAPI()
    tm.install(app)
    done: list[int] = []

    @app.exception_handler(TaskflowError)
    async def taskflow_error(request: Request, exc: TaskflowError) -> JSONResponse:
        status = 400 if isinstance(exc, InvalidTaskError) else 500
        return JSONResponse(status_code=status, content={"detail": str(exc)})

    @tm.task(name="good_job")
    async def good(n: int) -> int:
        done.append(n)
        return n

    @tm.task(name="hostile_job")
    async def hostile(value: str) -> str:
        return value

    @tm.task(name="outcome_job")
    def outcome(kind: str) -> str:
        if kind == "nul_error":
            raise ValueError("bad\x00value")
        if kind == "nul_log":
            task_log("a NUL\x00 and a surrogate \udce9")
            return "logged"
        return "caf\udce9"

    def add(sink: Any, kind: str, n: int) -> str:
        if kind in OUTCOMES:
            return sink(outcome, kind)  # type: ignore[no-any-return]
        opts = dict(REFUSED[kind])
        arg = opts.pop("arg", "plain")
        key = opts.pop("key", None)
        if key is not None:
            opts["idempotency_key"] = f"{key}{n}" if len(key) < 10 else key
        return sink(hostile, arg, **opts)  # type: ignore[no-any-return]

    @app.post("/good/{n}")
    async def add_good(n: int, background_tasks: BackgroundTasks) -> dict[str, str]:
        return {"id": background_tasks.add_task(good, n)}  # type: ignore[func-returns-value]

    @app.post("/hostile/{kind}/{n}")
    def add_hostile(kind: str, n: int, background_tasks: BackgroundTasks) -> dict[str, str]:
        return {"id": add(background_tasks.add_task, kind, n)}

    app.state.add = add
    return tm, app, done


async def test_steady_load_with_hostile_values(durable_url: str, wait_for: Wait) -> None:
    tm, app, done = build(durable_url)
    kinds = [*REFUSED, *OUTCOMES]
    calls: list[tuple[str, str, int]] = [("good", "", n) for n in range(GOOD)]
    calls += [("route", kind, n) for kind in kinds for n in range(EACH)]
    calls += [("outside", kind, n) for kind in kinds for n in range(EACH)]
    random.Random(9).shuffle(calls)
    accepted: dict[str, str] = {}  # task id -> kind
    refused_outside: list[str] = []

    async with (
        tm,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http,
    ):

        async def one(where: str, kind: str, n: int) -> None:
            if where == "outside":
                try:
                    accepted[app.state.add(tm.add_task, kind, n + 1000)] = kind
                except InvalidTaskError:
                    refused_outside.append(kind)
                return
            path = f"/good/{n}" if where == "good" else f"/hostile/{kind}/{n}"
            answer = await http.post(path)
            if where == "good":
                assert answer.status_code == 200, answer.text
            elif kind in REFUSED:
                assert answer.status_code == 400, (kind, answer.status_code, answer.text)
            else:
                assert answer.status_code == 200, (kind, answer.text)
                accepted[answer.json()["id"]] = kind

        for wave in range(0, len(calls), 40):
            await asyncio.gather(*(one(*call) for call in calls[wave : wave + 40]))

        assert sorted(refused_outside) == sorted(k for k in REFUSED for _ in range(EACH))
        assert sorted(accepted.values()) == sorted(k for k in OUTCOMES for _ in range(2 * EACH))
        await wait_for(lambda: len(done) == GOOD, timeout=120)
        assert sorted(done) == list(range(GOOD))

        async def settled() -> bool:
            stats = await tm.store.astats()
            return not stats.by_status.get(TaskStatus.PENDING) and not stats.by_status.get(
                TaskStatus.RUNNING
            )

        await wait_for(settled, timeout=120)
        for task_id, kind in accepted.items():
            record = await tm.store.aget(task_id)
            assert record is not None and record.status.is_terminal, (kind, record)
            if kind == "nul_error":
                assert record.status is TaskStatus.FAILED
                assert record.error is not None and "ValueError: bad\ufffdvalue" in record.error
                assert "U+FFFD" in record.error
            else:
                assert record.status is TaskStatus.SUCCESS
                assert any("U+FFFD" in entry.message for entry in record.logs), kind
        stats = await tm.store.astats()
        assert stats.by_status.get(TaskStatus.SUCCESS) == GOOD + 4 * EACH
        assert stats.by_status.get(TaskStatus.FAILED) == 2 * EACH
        assert len(tm._engine.pending) == 0
