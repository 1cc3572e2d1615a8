"""The engine's own tasks stop when asked, on every Python the packages declare.

Two ways they did not, on Python 3.10: its ``asyncio.wait_for`` returns the awaited
result and drops the caller's cancellation when both come in the same loop iteration
(the adoption loop waited through it: it lived on after a shutdown cancelled it, and
the shutdown never returned, one run in ~50 of a SQLite manager's start and stop); and
3.10 has no ``Task.cancelling()``, so a loop whose driver turned the cancellation into
an error (redis-py's subscription) could not tell it had been asked to stop and went on
retrying: the end of an event loop, which cancels every task once and waits for them,
never came (a bare ``TestClient`` on Redis hung at its first request's end)."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fastapi_taskflow import TaskManager
from fastapi_taskflow.runtime import reraise_if_cancelled, within

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_within_keeps_a_cancellation_that_comes_with_the_result() -> None:
    answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    caller = asyncio.ensure_future(within(5, answer))
    await asyncio.sleep(0)  # the caller waits for the answer
    answer.set_result(1)
    caller.cancel()  # in the same loop iteration
    with pytest.raises(asyncio.CancelledError):
        await caller


async def test_within_gives_the_result_or_a_timeout_error() -> None:
    async def slow() -> int:
        await asyncio.sleep(10)
        return 1

    async def quick() -> int:
        return 2

    assert await within(1, quick()) == 2
    started = time.monotonic()
    with pytest.raises(TimeoutError):  # the builtin one, on 3.10 too
        await within(0.05, slow())
    assert time.monotonic() - started < 5


async def test_within_passes_the_call_s_own_error_on() -> None:
    async def broken() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await within(1, broken())


async def _retrying(rounds: list[int]) -> None:
    """An engine loop over a driver that turns its cancellation into an error (what
    redis-py does while tearing a subscription down; see ``reraise_if_cancelled``)."""
    while True:
        rounds.append(1)
        try:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                raise ConnectionError("connection closed") from None
        except ConnectionError:
            reraise_if_cancelled()


async def test_a_loop_that_turns_its_cancellation_into_an_error_still_stops(
    tmp_path: Path,
) -> None:
    tm = TaskManager(backend=f"sqlite:///{tmp_path}/tasks.db")
    rounds: list[int] = []
    async with tm:
        runtime = tm._engine.current_runtime
        assert runtime is not None
        task = runtime.spawn(_retrying(rounds), name="test-retrying")
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.wait({task}, timeout=5)
        assert task.cancelled()
        assert len(rounds) == 1


def test_an_event_loop_ends_although_an_engine_loop_turned_its_cancellation_into_an_error(
    tmp_path: Path,
) -> None:
    """``asyncio.run()`` (and anyio's, a bare ``TestClient``'s) ends by cancelling every
    task once and waiting for them: a task that retried after it would hold it for
    ever."""
    tm = TaskManager(backend=f"sqlite:///{tmp_path}/tasks.db")
    rounds: list[int] = []

    async def main() -> None:
        await tm.startup()  # and no shutdown: the loop's end releases the engine
        runtime = tm._engine.current_runtime
        assert runtime is not None
        runtime.spawn(_retrying(rounds), name="test-retrying")
        await asyncio.sleep(0)

    ended = threading.Event()

    def run() -> None:
        asyncio.run(main())
        ended.set()

    threading.Thread(target=run, daemon=True).start()
    assert ended.wait(10), "the event loop did not end"
    assert len(rounds) == 1


async def test_a_shutdown_ends_an_engine_task_that_loses_its_first_cancellation(
    tmp_path: Path,
) -> None:
    """Losing one cancellation (as 3.10's ``wait_for`` does) does not hold a shutdown
    up: the engine cancels again what goes on running."""
    tm = TaskManager(backend=f"sqlite:///{tmp_path}/tasks.db")
    ended = asyncio.Event()

    async def loses_one_cancellation() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            uncancel = getattr(asyncio.current_task(), "uncancel", None)
            if uncancel is not None:
                uncancel()  # 3.11+: as a wait_for that dropped it would leave the task
        try:
            await asyncio.sleep(60)
        finally:
            ended.set()

    async with tm:
        runtime = tm._engine.current_runtime
        assert runtime is not None
        runtime.spawn(loses_one_cancellation(), name="test-stubborn")
        await asyncio.sleep(0)
        started = time.monotonic()
    assert ended.is_set()
    assert time.monotonic() - started < 5


async def test_a_shutdown_leaves_a_task_that_never_stops_behind_and_says_so(
    tmp_path: Path, caplog: Any
) -> None:
    tm = TaskManager(backend=f"sqlite:///{tmp_path}/tasks.db", shutdown_timeout=0)
    stubborn: asyncio.Task[None] | None = None
    released = False

    async def never_stops() -> None:
        while not released:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                uncancel = getattr(asyncio.current_task(), "uncancel", None)
                if uncancel is not None:
                    uncancel()

    caplog.set_level(logging.WARNING, logger="fastapi_taskflow")
    try:
        async with tm:
            runtime = tm._engine.current_runtime
            assert runtime is not None
            stubborn = runtime.spawn(never_stops(), name="test-never-stops")
            await asyncio.sleep(0)
            started = time.monotonic()
        took = time.monotonic() - started
        assert took < 5 + 2  # shutdown_timeout + the cleanup time, and some slack
        assert "did not stop when cancelled: test-never-stops" in caplog.text
    finally:
        released = True
        if stubborn is not None:
            stubborn.cancel()
            await asyncio.wait({stubborn}, timeout=1)


@pytest.mark.skipif(sys.version_info >= (3, 11), reason="the 3.10 wait_for race")
async def test_python_3_10_wait_for_does_drop_the_cancellation() -> None:
    """Why ``within`` does not use ``wait_for`` on 3.10: if this ever fails, 3.10's
    ``wait_for`` was fixed and ``within`` can use it again."""
    answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    caller = asyncio.ensure_future(asyncio.wait_for(answer, 5))
    await asyncio.sleep(0)
    answer.set_result(1)
    caller.cancel()
    assert await caller == 1


async def test_with_no_time_left_the_engine_tasks_still_get_their_cancellation_s_step(
    tmp_path: Path, caplog: Any
) -> None:
    """A shutdown whose cleanup time the store used up (a hand-back that timed out)
    still lets the engine's tasks take their cancellation (one pass of the loop: most
    end there), rather than closing the store under them and naming them as stuck."""
    tm = TaskManager(backend=f"sqlite:///{tmp_path}/tasks.db")
    caplog.set_level(logging.WARNING, logger="fastapi_taskflow")
    async with tm:
        runtime = tm._engine.current_runtime
        assert runtime is not None
        sleeper = runtime.spawn(asyncio.sleep(60), name="test-sleeper")
        await asyncio.sleep(0)
        await runtime.stop_background(timeout=0)
        assert sleeper.cancelled()
    assert "test-sleeper" not in caplog.text  # not named as a task that did not stop
