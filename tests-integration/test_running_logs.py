"""A long attempt's ``task_log()`` lines are written while it runs, not only at its end.

Every ``LOG_FLUSH_INTERVAL`` (1 s) the engine writes the lines of the attempts that were
already running at its previous round: ``store.get()`` shows a long task's lines so far,
on every backend, and the lines of one attempt end up stored once each, in order,
however its writes fall between those rounds and its outcome.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import durable_stores
import pytest
from store_servers import private_redis

from fastapi_taskflow import (
    BaseObserver,
    LogEvent,
    TaskManager,
    TaskRecord,
    TaskStatus,
    task_log,
)
from fastapi_taskflow.limits import LOG_LINES_MAX, LOG_MESSAGE_MAX, cut_text

pytestmark = pytest.mark.anyio

any_url = durable_stores.any_url  # memory://, then each durable backend

Wait = Callable[..., Awaitable[Any]]


async def _finished(tm: TaskManager, task_id: str) -> TaskRecord | None:
    """The task's record once it has ended, else None."""
    record = await tm.store.aget(task_id)
    return record if record is not None and record.status.is_terminal else None


async def test_a_long_attempt_s_lines_can_be_read_while_it_runs(
    any_url: str, wait_for: Wait
) -> None:
    tm = TaskManager(any_url)
    release = asyncio.Event()

    @tm.task(name="long_job")
    async def long_job() -> str:
        task_log("downloading", part=1)
        task_log("still downloading", level="debug")
        await release.wait()
        task_log("done")
        return "ok"

    async with tm:
        task_id = tm.add_task(long_job)

        async def lines_so_far() -> Any:
            record = await tm.store.aget(task_id)
            return record if record is not None and record.logs else None

        running = await wait_for(lines_so_far, timeout=15)
        assert running.status is TaskStatus.RUNNING
        assert [(e.message, e.level) for e in running.logs] == [
            ("downloading", "info"),
            ("still downloading", "debug"),
        ]
        assert running.logs[0].extra == {"part": 1}

        release.set()

        done = await wait_for(partial(_finished, tm, task_id), timeout=15)
        assert done.status is TaskStatus.SUCCESS
        assert [e.message for e in done.logs] == ["downloading", "still downloading", "done"]


async def test_a_huge_line_is_recorded_cut_and_its_neighbours_whole(
    any_url: str, wait_for: Wait
) -> None:
    """A payload logged by mistake (here 20 MB: more than a MySQL server takes in one
    write) is recorded as its first ``LOG_MESSAGE_MAX`` characters and how many more
    there were; the lines around it, and the outcome, are stored as ever."""
    tm = TaskManager(any_url)
    huge = "x" * 20_000_000

    @tm.task(name="logs_a_payload")
    async def logs_a_payload() -> str:
        task_log("before")
        task_log(huge, payload=True, body=huge)
        task_log("after")
        return "ok"

    async with tm:
        task_id = tm.add_task(logs_a_payload)

        done = await wait_for(partial(_finished, tm, task_id), timeout=30)
    assert done.status is TaskStatus.SUCCESS
    assert done.result == "ok"
    before, cut, after = done.logs
    assert (before.message, after.message) == ("before", "after")
    assert cut.message == "x" * LOG_MESSAGE_MAX + (
        f"... [{20_000_000 - LOG_MESSAGE_MAX} more characters not recorded]"
    )
    assert cut.extra == {"payload": True, "body": cut.message}


async def test_a_huge_list_or_object_in_a_line_s_extra_is_recorded_as_its_cut_json(
    any_url: str, wait_for: Wait
) -> None:
    """A payload can hide in ``extra``'s lists and objects as well as in its text: what
    is stored is the value's JSON text, cut as a long text is; small ones stay as they
    are."""
    tm = TaskManager(any_url)
    rows = [{"id": n, "body": "y" * 100} for n in range(1_000)]

    @tm.task(name="logs_rows")
    async def logs_rows() -> str:
        task_log("rows", rows=rows, page={"rows": rows}, small=[1, {"a": "b"}], n=1_000)
        return "ok"

    async with tm:
        task_id = tm.add_task(logs_rows)

        done = await wait_for(partial(_finished, tm, task_id), timeout=30)
    assert done.status is TaskStatus.SUCCESS
    (line,) = done.logs
    text = json.dumps(rows, ensure_ascii=False)
    assert line.extra == {
        "rows": text[:LOG_MESSAGE_MAX]
        + f"... [{len(text) - LOG_MESSAGE_MAX} more characters not recorded]",
        "page": cut_text(json.dumps({"rows": rows}, ensure_ascii=False), LOG_MESSAGE_MAX),
        "small": [1, {"a": "b"}],
        "n": 1_000,
    }
    assert len(rows) == 1_000 and rows[0] == {"id": 0, "body": "y" * 100}  # untouched


async def test_an_attempt_stores_its_first_lines_and_says_when_it_stopped(
    any_url: str, wait_for: Wait
) -> None:
    """A task logging a line per row of a large job: its attempt stores the first
    ``LOG_LINES_MAX`` lines and a warning saying the later ones are not stored (the
    store does not grow by a row a line for ever, and reading the task stays cheap);
    observers receive every line."""
    heard: list[str] = []

    class Listener(BaseObserver):
        async def on_log(self, event: LogEvent) -> None:
            heard.append(event.message)

    tm = TaskManager(any_url, observers=[Listener()])
    rows = LOG_LINES_MAX + 50

    @tm.task(name="logs_every_row")
    async def logs_every_row() -> str:
        for n in range(rows):
            task_log(f"row {n}")
        return "ok"

    async with tm:
        task_id = tm.add_task(logs_every_row)
        done = await wait_for(partial(_finished, tm, task_id), timeout=60)
        await wait_for(lambda: len(heard) == rows, timeout=30)
    assert done.status is TaskStatus.SUCCESS
    messages = [e.message for e in done.logs]
    assert messages[:LOG_LINES_MAX] == [f"row {n}" for n in range(LOG_LINES_MAX)]
    assert len(messages) == LOG_LINES_MAX + 1
    assert done.logs[-1].level == "warning"
    assert messages[-1].startswith("this attempt logged more than 10,000 lines")
    assert heard == [f"row {n}" for n in range(rows)]


async def test_a_chatty_long_attempt_s_lines_are_stored_once_each_in_order(
    any_url: str, wait_for: Wait
) -> None:
    """Lines written in every state of the rounds: some taken by a round while the
    attempt logs on, the rest with the outcome; a second attempt's after the first's."""
    tm = TaskManager(any_url)

    @tm.task(name="chatty_job", retries=1, delay=0)
    async def chatty_job() -> None:
        ctx_attempt = 1 if not seen else 2
        seen.append(ctx_attempt)
        for n in range(120):
            task_log(f"attempt {ctx_attempt} line {n}")
            await asyncio.sleep(0.02)
        if ctx_attempt == 1:
            raise RuntimeError("first attempt fails")

    seen: list[int] = []
    async with tm:
        task_id = tm.add_task(chatty_job)

        done = await wait_for(partial(_finished, tm, task_id), timeout=60)
    assert done.status is TaskStatus.SUCCESS
    own = [e.message for e in done.logs if " line " in e.message]
    expected = [f"attempt {a} line {n}" for a in (1, 2) for n in range(120)]
    assert own == expected
    # the engine's own line about the failure sits between the two attempts' lines
    failure = next(i for i, e in enumerate(done.logs) if e.message.startswith("attempt 1 failed"))
    assert done.logs[failure - 1].message == "attempt 1 line 119"


async def test_many_long_attempts_each_keep_their_own_lines_in_order(
    any_url: str, wait_for: Wait
) -> None:
    """Twenty long tasks log at once: each round writes all their lines together, and
    every task ends with exactly its own lines, in order."""
    tm = TaskManager(any_url)

    @tm.task(name="worker_job")
    async def worker_job(n: int) -> None:
        for step in range(80):
            task_log(f"job {n} step {step}")
            await asyncio.sleep(0.03)

    async with tm:
        ids = [tm.add_task(worker_job, n) for n in range(20)]

        async def all_done() -> Any:
            records = [await tm.store.aget(task_id) for task_id in ids]
            if all(r is not None and r.status.is_terminal for r in records):
                return records
            return None

        records = await wait_for(all_done, timeout=60)
    for n, record in enumerate(records):
        assert record.status is TaskStatus.SUCCESS
        assert [e.message for e in record.logs] == [f"job {n} step {s}" for s in range(80)]


async def test_a_shutdown_during_an_outage_leaves_no_write_of_lines_behind(wait_for: Wait) -> None:
    """The store goes down while a long task logs: the writes retried while the store
    is away (its lines so far, then its outcome as the shutdown interrupts it) end with
    the shutdown: they are cancelled once the running tasks had their time, so nothing
    of the instance writes after ``shutdown()`` returns."""
    with private_redis(start=True) as server:
        tm = TaskManager(f"{server.url}?prefix=flush", shutdown_timeout=1.0)

        @tm.task(name="chatty_forever")
        async def chatty_forever() -> None:
            n = 0
            while True:
                n += 1
                task_log(f"line {n}")
                await asyncio.sleep(0.01)

        before = asyncio.all_tasks()
        await tm.startup()
        task_id = tm.add_task(chatty_forever)

        async def lines_stored() -> Any:
            record = await tm.store.aget(task_id)
            return record is not None and record.logs

        await wait_for(lines_stored, timeout=15)
        server.stop()
        flusher = tm._engine.log_flusher
        await wait_for(lambda: flusher.writing, timeout=15)  # a write waits for the store
        await tm.shutdown()
        left = asyncio.all_tasks() - before
        assert left == set(), [task.get_stack(limit=1) for task in left]
