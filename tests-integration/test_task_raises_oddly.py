"""What a task raises, however odd, is that task's failure, on every backend: it ends
FAILED (after its retries) with its text, and the request's next tasks still run.

A sync task's exception crosses from the pool's thread to the event loop. Two kinds
could not make the trip: a ``StopIteration`` (``next()`` on an exhausted iterator, the
commonest way to meet one) cannot be set on an asyncio future, so the await never
returned and the task stayed RUNNING for ever with its request's later tasks never
run; a ``GeneratorExit`` thrown into the awaiting coroutine left the task RUNNING on
every durable backend.

And what a task logs never costs it its outcome: a log line's value with no JSON form
(``bytes`` that are not UTF-8, a dict holding itself, an object whose ``repr`` raises)
is stored as its ``repr``, or a placeholder naming its type.
"""

from __future__ import annotations

from typing import Any

import durable_stores
import pytest

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager, TaskStatus, task_log

pytestmark = pytest.mark.anyio

any_url = durable_stores.any_url  # memory://, then each durable backend


def first_row(rows: list[Any]) -> Any:
    return next(iter(rows))  # StopIteration on an empty list


async def first_row_async(rows: list[Any]) -> Any:
    return next(iter(rows))


def closes(rows: list[Any]) -> None:
    raise GeneratorExit("closed early")


@pytest.mark.parametrize(
    ("func", "error"),
    [
        (first_row, "RuntimeError: coroutine raised StopIteration"),
        (first_row_async, "RuntimeError: coroutine raised StopIteration"),
        (closes, "GeneratorExit: closed early"),
    ],
    ids=["stop-iteration-in-def", "stop-iteration-in-async-def", "generator-exit-in-def"],
)
async def test_an_odd_exception_fails_its_task_and_the_next_task_runs(
    any_url: str, func: Any, error: str
) -> None:
    tm = TaskManager(any_url)
    task = tm.task(name=func.__name__, retries=1)(func)

    @tm.task(name="after")
    async def after() -> str:
        return "ran"

    async with tm:
        tasks = ManagedBackgroundTasks(tm)
        failing = tasks.add_task(task, [])
        next_one = tasks.add_task(after)
        await tasks()  # returns: the failure is the task's own
        failed = await tm.store.aget(failing)
        assert failed is not None and failed.status is TaskStatus.FAILED, failed
        assert failed.attempt == 2 and failed.error is not None
        assert failed.error.startswith(error)
        done = await tm.store.aget(next_one)
        assert done is not None and done.status is TaskStatus.SUCCESS
        assert done.result == "ran"


class Loop(dict[str, Any]):
    """A dict holding itself."""


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


async def test_a_log_line_s_odd_values_never_cost_the_task_its_outcome(any_url: str) -> None:
    """guarantees.md: an ``extra`` value with no JSON form is stored as its ``repr``.
    ``bytes`` that are not UTF-8 (a file's first bytes) ended a successful task
    INTERRUPTED ("taskflow failed to record this task's outcome") on every backend."""
    tm = TaskManager(any_url)
    loop = Loop()
    loop["self"] = loop

    @tm.task(name="digest")
    async def digest(data: bytes) -> str:
        task_log("hashed payload", head=data[:4], text=b"abcd", loop=loop, odd=BadRepr())
        task_log("next line")
        return "done"

    async with tm:
        tasks = ManagedBackgroundTasks(tm)
        task_id = tasks.add_task(digest, b"\x89PNG\r\n")
        await tasks()
        record = await tm.store.aget(task_id)
    assert record is not None and record.status is TaskStatus.SUCCESS, record
    assert record.result == "done"
    lines = {entry.message: entry.extra for entry in record.logs}
    assert "next line" in lines
    extra = lines["hashed payload"]
    assert extra["head"] in (b"\x89PNG", repr(b"\x89PNG"))  # memory keeps the value
    assert extra["text"] in (b"abcd", "abcd")
