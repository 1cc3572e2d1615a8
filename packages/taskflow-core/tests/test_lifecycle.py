"""Observers, task context, shutdown and the sync thread pool."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any

import pytest

from fastapi_taskflow import (
    BaseObserver,
    InvalidOperationError,
    InvalidTaskError,
    LifecycleEvent,
    ManagedBackgroundTasks,
    MemoryObserver,
    TaskManager,
    TaskStatus,
    get_task_context,
    task_log,
)
from fastapi_taskflow.events import decode_bus_event, encode_bus_event
from fastapi_taskflow.manager import DEFAULT_SYNC_WORKERS

pytestmark = pytest.mark.anyio


class ExplodingObserver(BaseObserver):
    async def on_lifecycle(self, event: LifecycleEvent) -> None:
        raise RuntimeError("observer bug")


async def test_events_carry_tags_and_a_raising_observer_breaks_nothing() -> None:
    memory = MemoryObserver()
    tm = TaskManager(observers=[ExplodingObserver(), memory])
    seen: list[Any] = []

    @tm.task()
    def work(n: int) -> int:
        ctx = get_task_context()
        seen.append(ctx)
        task_log("working", level="debug", n=n)
        return n * 2

    async with tm:
        managed = ManagedBackgroundTasks(tm)
        task_id = managed.add_task(work, 21, tags={"tenant": "acme"})
        await managed()
    record = tm.store.get(task_id)
    assert record is not None and record.status is TaskStatus.SUCCESS and record.result == 42
    ctx = seen[0]
    assert (ctx.task_id, ctx.attempt, ctx.tags) == (task_id, 1, {"tenant": "acme"})
    assert ctx.func_name.endswith("work")
    assert [e.status for e in memory.lifecycle_events] == ["running", "success"]
    (log,) = memory.log_events
    assert (log.message, log.level, log.extra, log.tags) == (
        "working",
        "debug",
        {"n": 21},
        {"tenant": "acme"},
    )
    assert all(e.tags == {"tenant": "acme"} for e in memory.events)
    assert [entry.message for entry in record.logs] == ["working"]


def test_task_log_outside_a_task_is_a_no_op() -> None:
    assert get_task_context() is None
    task_log("nobody listens")


async def test_sync_functions_run_in_a_bounded_pool(eventually: Any) -> None:
    tm = TaskManager(sync_workers=2)
    lock = threading.Lock()
    running = 0
    peak = 0

    @tm.task()
    def blocking() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    async with tm:
        managed = ManagedBackgroundTasks(tm)
        ids = [managed.add_task(blocking, eager=True) for _ in range(8)]
        await eventually(
            lambda: all(tm.store.get(i).status is TaskStatus.SUCCESS for i in ids)  # type: ignore[union-attr]
        )
    assert peak == 2


async def test_by_default_as_many_blocking_tasks_run_at_once_as_plain_background_tasks() -> None:
    """40 requests' ``def`` tasks, each blocked until all 40 have started, all finish:
    the default pool has Starlette's 40 threads (it had ``cpus + 4``, 6 on two cores, so
    a migrated app's blocking tasks ran a few at a time and queued behind each other)."""
    tm = TaskManager()
    all_started = threading.Barrier(DEFAULT_SYNC_WORKERS, timeout=10)

    @tm.task()
    def send_email() -> None:
        all_started.wait()

    async with tm:
        requests = [ManagedBackgroundTasks(tm) for _ in range(DEFAULT_SYNC_WORKERS)]
        ids = [request.add_task(send_email) for request in requests]
        await asyncio.gather(*(request() for request in requests))
        assert {tm.store.get(i).status for i in ids} == {TaskStatus.SUCCESS}  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "8"])
def test_sync_workers_must_be_a_whole_number_of_threads(bad: object) -> None:
    with pytest.raises(InvalidTaskError, match="sync_workers must be a whole number"):
        TaskManager(sync_workers=bad)  # type: ignore[arg-type]


async def test_shutdown_gives_running_tasks_time_then_interrupts_them() -> None:
    tm = TaskManager(shutdown_timeout=0.2)
    started = asyncio.Event()

    @tm.task()
    async def quick() -> None:
        started.set()

    @tm.task()
    async def endless() -> None:
        started.set()
        await asyncio.Event().wait()

    await tm.startup()
    managed = ManagedBackgroundTasks(tm)
    finished = managed.add_task(quick, eager=True)
    stuck = managed.add_task(endless, eager=True)
    await started.wait()
    await tm.shutdown()
    assert (await tm.store.aget(finished)).status is TaskStatus.SUCCESS  # type: ignore[union-attr]
    record = await tm.store.aget(stuck)
    assert record is not None and record.status is TaskStatus.INTERRUPTED
    assert record.finished_at is not None


async def test_a_sync_task_cut_off_by_shutdown_is_asked_to_stop() -> None:
    """Python cannot interrupt a thread: a ``def`` task still running at the shutdown
    deadline is told through ``cancel_requested`` (what ``raise_if_cancelled()``
    checks), so a task that checks between steps stops instead of running on (and
    keeping the process from exiting); it ends INTERRUPTED, as every task the deadline
    cuts off."""
    tm = TaskManager(shutdown_timeout=0.2)
    running = threading.Event()
    stopped = threading.Event()

    @tm.task()
    def crunch() -> None:
        ctx = get_task_context()
        assert ctx is not None
        running.set()
        give_up = time.monotonic() + 30
        while time.monotonic() < give_up:
            if ctx.cancel_requested:
                stopped.set()
                return
            time.sleep(0.01)

    await tm.startup()
    task_id = ManagedBackgroundTasks(tm).add_task(crunch, eager=True)
    assert await asyncio.to_thread(running.wait, 5)
    await tm.shutdown()
    assert await asyncio.to_thread(stopped.wait, 5), "the thread was never asked to stop"
    record = await tm.store.aget(task_id)
    assert record is not None and record.status is TaskStatus.INTERRUPTED


async def test_a_fresh_loop_gets_a_fresh_runtime() -> None:
    """A manager outlives event loops (a test client may open one per test): each new
    loop gets its own runtime, bound to that loop, and the task runs on it."""
    tm = TaskManager()
    ran_on: list[asyncio.AbstractEventLoop] = []

    @tm.task()
    async def job() -> None:
        await asyncio.sleep(0)
        ran_on.append(asyncio.get_running_loop())

    def in_new_loop() -> tuple[str, object, asyncio.AbstractEventLoop, bool]:
        async def run() -> tuple[str, object, asyncio.AbstractEventLoop, bool]:
            managed = ManagedBackgroundTasks(tm)
            task_id = managed.add_task(job)
            await managed()
            runtime = tm._engine.current_runtime
            loop = asyncio.get_running_loop()
            return task_id, runtime, loop, runtime is not None and runtime.loop is loop

        return asyncio.run(run())

    first_id, first_runtime, first_loop, first_bound = await asyncio.to_thread(in_new_loop)
    second_id, second_runtime, second_loop, second_bound = await asyncio.to_thread(in_new_loop)
    assert first_bound and second_bound, "the runtime in use is not the current loop's"
    assert first_runtime is not second_runtime
    assert ran_on == [first_loop, second_loop]
    for task_id in (first_id, second_id):
        assert tm.store.get(task_id).status is TaskStatus.SUCCESS  # type: ignore[union-attr]


async def test_reads_after_shutdown_start_no_background_loops_and_startup_resumes() -> None:
    """A read after shutdown must not leave loops running that nobody will stop."""
    tm = TaskManager()

    @tm.task()
    async def job() -> None:
        pass

    async with tm:
        managed = ManagedBackgroundTasks(tm)
        first = managed.add_task(job)
        await managed()
    assert (await tm.store.aget(first)).status is TaskStatus.SUCCESS  # type: ignore[union-attr]
    runtime = tm._engine.current_runtime
    assert runtime is not None and not runtime.background
    async with tm:  # starts fully again
        assert tm._engine.current_runtime is not runtime
        assert tm._engine.current_runtime.background  # type: ignore[union-attr]
        again = ManagedBackgroundTasks(tm)
        second = again.add_task(job)
        await again()
    assert (await tm.store.aget(second)).status is TaskStatus.SUCCESS  # type: ignore[union-attr]


async def test_an_observer_failing_on_every_event_logs_one_traceback_then_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exploding = ExplodingObserver()
    tm = TaskManager(observers=[exploding])

    @tm.task()
    async def job() -> None:
        pass

    caplog.set_level(logging.DEBUG, logger="fastapi_taskflow")
    async with tm:
        managed = ManagedBackgroundTasks(tm)
        for _ in range(10):
            managed.add_task(job)
        await managed()
    failed = [r for r in caplog.records if "observer" in r.getMessage()]
    with_traceback = [r for r in failed if r.exc_text and "Traceback" in r.exc_text]
    assert len(with_traceback) == 1, f"{len(with_traceback)} tracebacks for one observer bug"
    assert "observer bug" in caplog.text  # the first one is shown in full
    assert tm.observers.failures[id(exploding)] == 20  # running + success, 10 tasks
    counted = [r for r in failed if "has failed on 10 events" in r.getMessage()]
    assert len(counted) == 1 and len(failed) <= 3


async def test_an_events_stream_nobody_reads_holds_its_backlog_and_drops_the_oldest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A reader that stops reading (a stuck client of an SSE route built on
    ``events()``) must not grow the process's memory without bound: the stream holds
    ``backlog`` unread events, drops the oldest past that, and says so when it starts
    dropping and, with the count, when the stream ends."""
    observer = MemoryObserver()
    tm = TaskManager(observers=[observer])

    async def job() -> None:
        pass

    with pytest.raises(InvalidOperationError, match="backlog"):
        tm.events(backlog=0)
    caplog.set_level(logging.WARNING, logger="fastapi_taskflow")
    async with tm, tm.events(backlog=5) as stream:
        tasks = ManagedBackgroundTasks(tm)
        for _ in range(20):
            tasks.add_task(job)
        await tasks()  # 40 lifecycle events (running, success), none read
        read = [await stream.__anext__() for _ in range(5)]
    assert read == observer.lifecycle_events[-5:]  # the newest five, the rest dropped
    assert len(observer.lifecycle_events) == 40
    warned = [r.getMessage() for r in caplog.records if "events() stream" in r.getMessage()]
    assert len(warned) == 2 and "the oldest are dropped" in warned[0]
    assert "dropped 35 events" in warned[1]


@pytest.mark.parametrize("instance_id", ["web-1", "", None, "two\nlines", "{odd}", "@12"])
def test_an_event_travels_with_its_publisher_whatever_its_instance_id(
    instance_id: str | None,
) -> None:
    """The wire form round-trips every event, and a subscriber leaves out the events of
    the instance it names (an id that cannot lead the form travels as bare JSON, which
    the hub skips after decoding)."""
    event = LifecycleEvent(
        task_id="t1",
        func_name="app.send",
        timestamp=datetime.now(timezone.utc),
        instance_id=instance_id,
        status=TaskStatus.RUNNING,
    )
    wire = encode_bus_event(event)
    assert decode_bus_event(wire) == event
    assert decode_bus_event(wire.encode(), skip_instance="someone-else") == event
    if instance_id and "\n" not in instance_id and not instance_id.startswith("{"):
        assert decode_bus_event(wire, skip_instance=instance_id) is None
