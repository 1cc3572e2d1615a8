"""A task's final write always lands (issue 9 #3).

What a task produces cannot be refused at ``add_task()``: a return value with a lone
surrogate, an error message or a ``task_log`` line with a NUL. Each is stored with the
characters no store can hold replaced (U+FFFD) and the replacement said in the error or
in a log line, on every durable backend. When the store refuses the outcome anyway, the
task is ended INTERRUPTED with a plain error once the store takes that: never RUNNING
forever.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from durable_stores import DURABLE, SQL, isolated_url, refuse_status

from fastapi_taskflow import TaskManager, TaskStatus, task_log

pytestmark = pytest.mark.anyio

Wait = Callable[..., Awaitable[Any]]


@pytest.fixture(params=list(DURABLE))
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from isolated_url(request.param, tmp_path)


@pytest.fixture(params=SQL)
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from isolated_url(request.param, tmp_path)


def finished(tm: TaskManager, task_id: str) -> Callable[[], Awaitable[Any]]:
    async def check() -> Any:
        record = await tm.store.aget(task_id)
        return record if record is not None and record.status.is_terminal else None

    return check


async def test_unstorable_outcomes_are_stored_cleaned(durable_url: str, wait_for: Wait) -> None:
    tm = TaskManager(durable_url)

    @tm.task(name="returns_surrogate")
    async def returns_surrogate() -> dict[str, str]:
        return {"name": "caf\udce9", "nul": "a\x00b"}

    @tm.task(name="raises_nul")
    async def raises_nul() -> None:
        raise ValueError("bad\x00value caf\udce9")

    @tm.task(name="logs_nul")
    def logs_nul() -> int:
        task_log("line\x00 caf\udce9", level="warning", thing=object(), text="x\udce9")
        return 1

    async with tm:
        ok = tm.add_task(returns_surrogate, idempotency_key="k-ok")
        bad = tm.add_task(raises_nul, idempotency_key="k-bad")
        logged = tm.add_task(logs_nul)
        ok_record = await wait_for(finished(tm, ok), timeout=30)
        bad_record = await wait_for(finished(tm, bad), timeout=30)
        log_record = await wait_for(finished(tm, logged), timeout=30)

        assert ok_record.status is TaskStatus.SUCCESS
        assert ok_record.result == {"name": "caf\ufffd", "nul": "a\x00b"}
        assert any("U+FFFD" in entry.message for entry in ok_record.logs)

        assert bad_record.status is TaskStatus.FAILED
        assert bad_record.error.startswith("ValueError: bad\ufffdvalue caf\ufffd")
        assert "U+FFFD" in bad_record.error
        # FAILED releases the key: the same key makes a new task.
        assert tm.add_task(raises_nul, idempotency_key="k-bad") != bad

        assert log_record.status is TaskStatus.SUCCESS and log_record.result == 1
        [line] = [e for e in log_record.logs if e.message.startswith("line")]
        assert line.message == "line\ufffd caf\ufffd"
        assert line.extra["text"] == "x\ufffd" and line.extra["thing"].startswith("<object")


async def test_a_refused_outcome_ends_interrupted(sql_url: str, wait_for: Wait) -> None:
    tm = TaskManager(sql_url, liveness_seconds=1)

    @tm.task(name="stubborn_job")
    async def stubborn() -> int:
        return 1

    async with tm:
        await refuse_status(tm.backend, "stubborn", "success")
        task_id = tm.add_task(stubborn)
        record = await wait_for(finished(tm, task_id), timeout=30)
    assert record.status is TaskStatus.INTERRUPTED
