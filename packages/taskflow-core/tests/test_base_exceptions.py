"""What a task's own BaseException does: a failure of that task, never of the app.

``sys.exit()`` in a task (argparse, a reused command-line entry point), a library's
``BaseException``, or a ``CancelledError`` nobody asked for (a child task cancelled
and awaited) is recorded as a failed attempt with its text and retried like any
error; the tasks after it still run, and the event loop keeps running (asyncio stops
its loop when a ``SystemExit`` leaves a task, which took a whole server down with a
queued or eager task). A ``KeyboardInterrupt`` still stops the program, and its task
ends INTERRUPTED, not RUNNING forever. A real server is in
``tests-integration/test_task_exits.py``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager, TaskStatus

pytestmark = pytest.mark.anyio


class LibraryStop(BaseException):
    """A library's own BaseException (as gevent's GreenletExit is)."""


async def cancelled_child() -> None:
    child = asyncio.ensure_future(asyncio.sleep(10))
    await asyncio.sleep(0)
    child.cancel()
    await child  # raises CancelledError here, though nobody cancelled this task


def own_cancel_cases() -> list[Any]:
    needs_311 = pytest.mark.skipif(
        sys.version_info < (3, 11), reason="Python 3.10 cannot tell who cancelled a task"
    )
    return [pytest.param("child", "CancelledError", marks=needs_311)]


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("exit", "SystemExit: 2"),
        ("exit-in-thread", "SystemExit: 2"),
        ("library", "LibraryStop: stop"),
        *own_cancel_cases(),
    ],
)
async def test_a_task_s_base_exception_is_its_failure_and_the_next_task_runs(
    kind: str, error: str
) -> None:
    tm = TaskManager()
    calls: list[str] = []

    @tm.task(retries=1)
    async def leaves() -> None:
        calls.append(kind)
        if kind == "exit":
            sys.exit(2)
        if kind == "library":
            raise LibraryStop("stop")
        await cancelled_child()

    @tm.task(retries=1)
    def leaves_from_a_thread() -> None:
        calls.append(kind)
        sys.exit(2)

    async def after() -> None:
        calls.append("after")

    async with tm:
        tasks = ManagedBackgroundTasks(tm)
        failing = tasks.add_task(leaves_from_a_thread if kind == "exit-in-thread" else leaves)
        next_one = tasks.add_task(after)
        await tasks()  # raises nothing: the failure is the task's
        failed = await tm.store.aget(failing)
        assert failed is not None and failed.status is TaskStatus.FAILED
        assert failed.attempt == 2 and (failed.error or "").startswith(error)
        errors = [e.message for e in failed.logs if e.level == "error"]
        assert len(errors) == 2 and errors[0].startswith(f"attempt 1 failed: {error}")
        assert calls == [kind, kind, "after"]
        done = await tm.store.aget(next_one)
        assert done is not None and done.status is TaskStatus.SUCCESS


async def test_sys_exit_in_a_queued_or_eager_task_leaves_the_event_loop_running(
    eventually: Any,
) -> None:
    tm = TaskManager(poll_interval=0.01)

    @tm.task(queue="jobs")
    async def exits() -> None:
        sys.exit(3)

    @tm.task(queue="jobs")
    async def fine() -> str:
        return "ok"

    async with tm:
        queued = tm.add_task(exits)
        eager = ManagedBackgroundTasks(tm).add_task(exits, eager=True)
        later = tm.add_task(fine)
        for task_id in (queued, eager, later):
            await eventually(lambda t=task_id: tm.store.get(t).status.is_terminal)  # type: ignore[union-attr]
        assert [tm.store.get(t).status for t in (queued, eager, later)] == [  # type: ignore[union-attr]
            TaskStatus.FAILED,
            TaskStatus.FAILED,
            TaskStatus.SUCCESS,
        ]
        assert tm.store.get(queued).error == "SystemExit: 3"  # type: ignore[union-attr]


async def test_a_keyboard_interrupt_stops_the_container_and_its_task_ends_interrupted() -> None:
    tm = TaskManager()

    @tm.task(retries=2)
    async def interrupted() -> None:
        raise KeyboardInterrupt

    async with tm:
        tasks = ManagedBackgroundTasks(tm)
        task_id = tasks.add_task(interrupted)
        with pytest.raises(KeyboardInterrupt):
            await tasks()
        record = await tm.store.aget(task_id)
        assert record is not None and record.status is TaskStatus.INTERRUPTED
