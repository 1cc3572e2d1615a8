"""Retries with delay and exponential backoff; a waiting retry never blocks other tasks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fastapi_taskflow import ManagedBackgroundTasks, MemoryObserver, TaskManager, TaskStatus
from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.config import RETRY_WAIT_MAX, TaskConfig
from fastapi_taskflow.errors import InvalidTaskError, TaskTimeoutError

pytestmark = pytest.mark.anyio


def test_backoff_formula() -> None:
    config = TaskConfig(name="t", retries=4, delay=2, backoff=3)
    assert [config.retry_delay(n) for n in (1, 2, 3, 4)] == [2, 6, 18, 54]
    assert TaskConfig(name="t", retries=2, delay=1.5).retry_delay(2) == 1.5


def test_max_delay_caps_the_backoff() -> None:
    config = TaskConfig(name="t", retries=6, delay=1, backoff=10, max_delay=60)
    assert [config.retry_delay(n) for n in range(1, 6)] == [1, 10, 60, 60, 60]


def test_a_wait_grown_past_any_number_is_capped() -> None:
    """The 1,025th wait of ``backoff=2`` is 2**1024 times ``delay``, more than a float
    holds: it raised OverflowError, and the task stayed RUNNING for ever."""
    capped = TaskConfig(name="t", retries=5000, delay=1, backoff=2, max_delay=60)
    assert [capped.retry_delay(n) for n in (1, 1024, 1025, 5000)] == [1, 60, 60, 60]
    uncapped = TaskConfig(name="t", retries=5000, delay=1, backoff=2)
    assert uncapped.retry_delay(5000) == RETRY_WAIT_MAX
    assert TaskConfig(name="t", retries=1, delay=1e300).retry_delay(1) == RETRY_WAIT_MAX


async def test_a_task_retried_more_than_1024_times_still_ends(eventually: Any) -> None:
    tm = TaskManager(poll_interval=0.001)
    calls: list[int] = []

    @tm.task(retries=1100, delay=0.0001, backoff=2, max_delay=0.001)
    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 1050:
            raise ConnectionError("try again")
        return "done"

    async with tm:
        tasks = ManagedBackgroundTasks(tm)
        task_id = tasks.add_task(flaky)
        await tasks()
        await eventually(lambda: tm.store.get(task_id).status.is_terminal, timeout=60)  # type: ignore[union-attr]
    record = tm.store.get(task_id)
    assert record is not None
    assert (record.status, record.attempt, len(calls)) == (TaskStatus.SUCCESS, 1050, 1050)


def test_jitter_draws_each_wait_between_its_share_and_the_computed_wait() -> None:
    config = TaskConfig(name="t", retries=6, delay=1, backoff=2, max_delay=5, jitter=0.5)
    for failed, computed in [(1, 1), (2, 2), (3, 4), (4, 5), (5, 5)]:
        draws = [config.retry_delay(failed) for _ in range(200)]
        assert all(computed * 0.5 <= d <= computed for d in draws), (failed, draws)
        assert len(set(draws)) > 100  # spread, not one value
    full = TaskConfig(name="t", retries=1, delay=10, jitter=1)
    draws = [full.retry_delay(1) for _ in range(500)]
    assert min(draws) < 2 and max(draws) > 8 and all(0 <= d <= 10 for d in draws)
    assert TaskConfig(name="t", retries=1, delay=3, jitter=0).retry_delay(1) == 3


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.5", True, float("nan")])
def test_jitter_is_a_fraction_from_0_to_1(bad: Any) -> None:
    with pytest.raises(InvalidTaskError, match=r"jitter must be a number from 0 to 1"):
        TaskManager().task(retries=1, jitter=bad)


async def test_a_jittered_retry_waits_and_says_the_wait_drawn(eventually: Any) -> None:
    tm = TaskManager(poll_interval=0.01)
    calls: list[float] = []

    @tm.task(retries=1, delay=0.2, jitter=1)
    async def flaky() -> str:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) == 1:
            raise ConnectionError("down")
        return "ok"

    async with tm:
        task_id = tm.add_task(flaky)
        await eventually(lambda: tm.store.get(task_id).status is TaskStatus.SUCCESS)  # type: ignore[union-attr]
        record = await tm.store.aget(task_id)
    assert record is not None and record.result == "ok"
    [said] = [e.message for e in record.logs if e.message.startswith("retrying in ")]
    waited = float(said.removeprefix("retrying in ").split("s ", 1)[0])
    assert 0 <= waited <= 0.2
    assert calls[1] - calls[0] >= waited - 0.01


@pytest.mark.parametrize("bad", ["ConnectionError", (), (ValueError, int), 3])
def test_retry_on_takes_exception_classes_only(bad: Any) -> None:
    tm = TaskManager()
    with pytest.raises(InvalidTaskError, match=r"retry_on must be an exception class"):
        tm.task(retries=1, retry_on=bad)
    with pytest.raises(InvalidTaskError, match="max_delay"):
        tm.task(retries=1, max_delay=0)


async def test_retry_on_retries_only_the_failures_it_names() -> None:
    tm = TaskManager()
    calls: dict[str, int] = {"bad_input": 0, "flaky": 0, "slow": 0}

    @tm.task(retries=3, retry_on=ConnectionError)
    async def bad_input() -> None:
        calls["bad_input"] += 1
        raise ValueError("no such user")

    @tm.task(retries=3, retry_on=(ConnectionError, TaskTimeoutError))
    async def flaky() -> str:
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise ConnectionRefusedError("down")  # a subclass counts
        return "ok"

    @tm.task(retries=2, timeout=0.01, retry_on=ConnectionError)
    async def slow() -> None:
        calls["slow"] += 1
        await asyncio.sleep(5)  # a timeout is retried only when retry_on names it

    async with tm:
        tasks = ManagedBackgroundTasks(tm)
        ids = [tasks.add_task(bad_input), tasks.add_task(flaky), tasks.add_task(slow)]
        await tasks()
        records = [await tm.store.aget(task_id) for task_id in ids]
    statuses = [(r.status, r.attempt) for r in records if r is not None]
    assert statuses == [(TaskStatus.FAILED, 1), (TaskStatus.SUCCESS, 3), (TaskStatus.FAILED, 1)]
    assert calls == {"bad_input": 1, "flaky": 3, "slow": 1}
    assert records[2] is not None and (records[2].error or "").startswith("TaskTimeoutError")


async def test_failed_attempts_are_retried_until_success(eventually: Any) -> None:
    tm = TaskManager(poll_interval=0.01)
    attempts: list[int] = []

    @tm.task(retries=3)
    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "done"

    async with tm:
        task_id = tm.add_task(flaky)
        await eventually(lambda: tm.store.get(task_id).status is TaskStatus.SUCCESS)  # type: ignore[union-attr]
    record = tm.store.get(task_id)
    assert record is not None
    assert record.attempt == 3 and record.result == "done"
    assert [e.message for e in record.logs if e.level == "error"] == [
        "attempt 1 failed: ConnectionError: try again",
        "attempt 2 failed: ConnectionError: try again",
    ]


async def test_exhausted_retries_fail_with_the_last_error(eventually: Any) -> None:
    tm = TaskManager(poll_interval=0.01)
    observer = MemoryObserver()
    tm.observers.add(observer)

    @tm.task(retries=1)
    def always_broken(n: int) -> None:
        raise ValueError(f"bad {n}")

    async with tm:
        managed = ManagedBackgroundTasks(tm)
        task_id = managed.add_task(always_broken, 7)
        await managed()  # the first attempt runs as Starlette would run it
        await eventually(lambda: tm.store.get(task_id).status is TaskStatus.FAILED)  # type: ignore[union-attr]
    record = tm.store.get(task_id)
    assert record is not None and record.attempt == 2 and record.error == "ValueError: bad 7"
    statuses = [e.status for e in observer.lifecycle_events if e.task_id == task_id]
    assert statuses == ["running", "pending", "running", "failed"]


async def test_unregistered_functions_run_once(eventually: Any) -> None:
    tm = TaskManager(poll_interval=0.01)
    calls: list[int] = []

    def plain() -> None:
        calls.append(1)
        raise RuntimeError("no retries for me")

    async with tm:
        managed = ManagedBackgroundTasks(tm)
        task_id = managed.add_task(plain)
        await managed()
        record = await tm.store.aget(task_id)
    assert record is not None and record.status is TaskStatus.FAILED
    assert calls == [1] and record.max_retries == 0


async def test_a_waiting_retry_does_not_block_others_and_honours_the_delay(eventually: Any) -> None:
    clock = ManualClock()
    tm = TaskManager(clock=clock, poll_interval=0.01)
    runs: list[str] = []

    @tm.task(retries=2, delay=60, backoff=2)
    async def slow_to_recover() -> None:
        runs.append("retrying")
        if runs.count("retrying") < 3:
            raise TimeoutError("upstream")

    @tm.task()
    async def quick(n: int) -> None:
        runs.append(f"quick{n}")

    async with tm:
        retrying = tm.add_task(slow_to_recover)
        await eventually(lambda: runs == ["retrying"])
        await eventually(lambda: tm.store.get(retrying).status is TaskStatus.PENDING)  # type: ignore[union-attr]
        # While the retry waits 60 s (on the injected clock), other tasks run freely.
        others = [tm.add_task(quick, n) for n in range(3)]
        for other in others:
            await eventually(lambda o=other: tm.store.get(o).status is TaskStatus.SUCCESS)  # type: ignore[misc]
        # Not due yet: nothing is claimable one second before the delay ends.
        clock.advance(59)
        assert await tm.backend.claim(queue="default", owner="probe") == []
        clock.advance(1)
        await eventually(lambda: runs.count("retrying") == 2)
        # The second retry waits delay * backoff = 120 s.
        clock.advance(119)
        assert await tm.backend.claim(queue="default", owner="probe") == []
        clock.advance(1)
        await eventually(lambda: tm.store.get(retrying).status is TaskStatus.SUCCESS)  # type: ignore[union-attr]
    assert runs.count("retrying") == 3
