"""Operator actions (``fastapi_taskflow.operations``) against a running engine.

The admin API and the ``taskflow`` command line retry and cancel tasks through the
backend alone. These tests show that a running ``TaskManager`` really runs a task that
``retry_task`` put back on its queue, and never runs a PENDING task that
``cancel_pending`` cancelled — on the in-process backend (the operation uses the
manager's own backend, as the admin API does) and on SQLite (the operation opens its own
backend on the same file, as the command line does).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from fastapi_taskflow import (
    QueueConfig,
    RetryQueueFullError,
    TaskManager,
    TaskNotFoundError,
    TaskQuery,
    TaskRecord,
    TaskStateError,
    TaskStatus,
)
from fastapi_taskflow.backends import open_backend
from fastapi_taskflow.clock import ManualClock, SystemClock
from fastapi_taskflow.operations import cancel_pending, purge_finished, retry_failed, retry_task
from fastapi_taskflow.protocols import TaskBackend

pytestmark = pytest.mark.anyio

Wait = Callable[..., Awaitable[Any]]


@pytest.fixture(params=["memory", "sqlite"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def engine_and_operator(
    kind: str, tmp_path: Path, manager: TaskManager
) -> AsyncIterator[tuple[TaskManager, TaskBackend]]:
    """A started manager, and the backend an operator acts through."""
    async with manager:
        if kind == "memory":
            yield manager, manager.backend  # the admin API's case: the app's backend
        else:
            operator = open_backend(f"sqlite:///{tmp_path / 'tasks.db'}")
            await operator.open()
            try:
                yield manager, operator  # the command line's case: its own connection
            finally:
                await operator.close()


def make_manager(kind: str, tmp_path: Path, **options: Any) -> TaskManager:
    url = "memory://" if kind == "memory" else f"sqlite:///{tmp_path / 'tasks.db'}"
    return TaskManager(backend=url, poll_interval=0.05, liveness_seconds=5, **options)


async def status_of(manager: TaskManager, task_id: str) -> TaskStatus | None:
    record = await manager.store.aget(task_id)
    return None if record is None else record.status


async def test_a_retried_task_runs_again_with_its_arguments(
    kind: str, tmp_path: Path, wait_for: Wait
) -> None:
    manager = make_manager(kind, tmp_path)
    calls: list[tuple[str, int]] = []

    @manager.task(name="flaky", priority=3)
    def flaky(email: str, *, count: int) -> str:
        calls.append((email, count))
        if len(calls) == 1:
            raise RuntimeError("smtp down")
        return f"sent {count} to {email}"

    async with engine_and_operator(kind, tmp_path, manager) as (manager, operator):
        task_id = manager.add_task(flaky, "a@example.com", count=2, tags={"team": "x"})
        await wait_for(lambda: _is(manager, task_id, TaskStatus.FAILED), timeout=10)
        failed = await manager.store.aget(task_id)
        assert failed is not None and failed.error == "RuntimeError: smtp down"

        moved = await retry_task(operator, task_id, clock=SystemClock(), actor="ops@test")

        assert moved.status is TaskStatus.PENDING and moved.attempt == 0
        assert moved.error is None and moved.finished_at is None
        await wait_for(lambda: _is(manager, task_id, TaskStatus.SUCCESS), timeout=10)
        done = await manager.store.aget(task_id)
        assert done is not None
        assert calls == [("a@example.com", 2), ("a@example.com", 2)]
        assert done.attempt == 1  # counting restarted
        assert done.result == "sent 2 to a@example.com"
        assert (done.tags, done.queue, done.priority) == ({"team": "x"}, "default", 3)
        messages = [entry.message for entry in done.logs]
        assert "retried by ops@test (was FAILED)" in messages


async def test_a_retried_task_runs_on_an_engine_that_never_queued_anything(
    kind: str, tmp_path: Path, wait_for: Wait
) -> None:
    """A task that failed as a request's background task (no queue involved): the
    engine's queue workers still pick up its retry (they run from startup on every
    backend, the in-process one included)."""
    manager = make_manager(kind, tmp_path)
    calls: list[int] = []

    @manager.task(name="report")
    def report(n: int) -> None:
        calls.append(n)

    async with engine_and_operator(kind, tmp_path, manager) as (manager, operator):
        at = SystemClock().now()
        await operator.create(
            finished("bg-1", TaskStatus.FAILED, at, func_name="report").model_copy(
                update={"args": [7]}
            )
        )
        await retry_task(operator, "bg-1", clock=SystemClock())
        await wait_for(lambda: _stored(operator, "bg-1", TaskStatus.SUCCESS), timeout=10)
        assert calls == [7]


async def test_a_cancelled_pending_task_never_runs(
    kind: str, tmp_path: Path, wait_for: Wait
) -> None:
    manager = make_manager(kind, tmp_path, queues={"solo": QueueConfig(concurrency=1)})
    release = asyncio.Event()
    ran: list[str] = []

    @manager.task(name="blocker", queue="solo")
    async def blocker() -> None:
        ran.append("blocker")
        await release.wait()

    @manager.task(name="victim", queue="solo")
    async def victim() -> None:
        ran.append("victim")

    @manager.task(name="after", queue="solo")
    async def after() -> None:
        ran.append("after")

    async with engine_and_operator(kind, tmp_path, manager) as (manager, operator):
        first = manager.add_task(blocker)
        await wait_for(lambda: _is(manager, first, TaskStatus.RUNNING), timeout=10)
        doomed = manager.add_task(victim)
        later = manager.add_task(after)
        # Written to the store (not only accepted) before an operator can see them.
        await wait_for(lambda: _stored(operator, later, TaskStatus.PENDING), timeout=10)
        assert await _stored(operator, doomed, TaskStatus.PENDING)

        cancelled = await cancel_pending(operator, doomed, clock=SystemClock())
        assert cancelled.status is TaskStatus.CANCELLED

        with pytest.raises(TaskStateError, match="RUNNING; only PENDING"):
            await cancel_pending(operator, first, clock=SystemClock())
        with pytest.raises(TaskStateError, match="has not finished yet"):
            await retry_task(operator, first, clock=SystemClock())

        release.set()
        # "after" was queued behind "victim" on a one-slot queue: once it has run, the
        # victim would have run before it had it still been on the queue.
        await wait_for(lambda: _is(manager, later, TaskStatus.SUCCESS), timeout=10)
        assert ran == ["blocker", "after"]
        assert await status_of(manager, doomed) is TaskStatus.CANCELLED
        assert await operator.queue_length("solo") == 0

        with pytest.raises(TaskStateError, match="already finished"):
            await cancel_pending(operator, doomed, clock=SystemClock())


async def _is(manager: TaskManager, task_id: str, status: TaskStatus) -> bool:
    return await status_of(manager, task_id) is status


async def _stored(backend: TaskBackend, task_id: str, status: TaskStatus) -> bool:
    record = await backend.get(task_id)
    return record is not None and record.status is status


# -- operations on the store alone ----------------------------------------------------


@asynccontextmanager
async def bare_backend(kind: str, tmp_path: Path, clock: Any) -> AsyncIterator[TaskBackend]:
    url = "memory://" if kind == "memory" else f"sqlite:///{tmp_path / 'bare.db'}"
    backend = open_backend(url, clock=clock)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


def finished(
    task_id: str,
    status: TaskStatus,
    at: datetime,
    *,
    func_name: str = "job",
    queue: str = "default",
) -> TaskRecord:
    return TaskRecord(
        task_id=task_id,
        func_name=func_name,
        status=status,
        queue=queue,
        args=[],
        kwargs={},
        attempt=1,
        created_at=at,
        updated_at=at,
        started_at=at,
        finished_at=at,
        error="boom" if status is TaskStatus.FAILED else None,
    )


async def test_retry_failed_follows_the_filter_and_stops_at_a_full_queue(
    kind: str, tmp_path: Path
) -> None:
    clock = ManualClock()
    async with bare_backend(kind, tmp_path, clock) as backend:
        t0 = clock.now()
        for i in range(5):
            await backend.create(finished(f"f{i}", TaskStatus.FAILED, t0 + timedelta(seconds=i)))
        await backend.create(finished("other", TaskStatus.FAILED, t0, func_name="other"))
        await backend.create(finished("ok", TaskStatus.SUCCESS, t0))

        with pytest.raises(RetryQueueFullError) as full:
            await retry_failed(backend, TaskQuery(func_name="job"), clock=clock, max_queued=2)
        assert full.value.retried == ["f4", "f3"]  # newest first
        assert "keeps its status" in str(full.value)
        assert await backend.queue_length("default") == 2

        rest = await retry_failed(backend, TaskQuery(func_name="job"), clock=clock, limit=2)
        assert rest == ["f2", "f1"]
        statuses = {r.task_id: r.status for r in (await backend.query(TaskQuery())).items}
        assert statuses["f0"] is TaskStatus.FAILED
        assert statuses["other"] is TaskStatus.FAILED
        assert statuses["ok"] is TaskStatus.SUCCESS
        assert all(statuses[f"f{i}"] is TaskStatus.PENDING for i in range(1, 5))

        with pytest.raises(TaskStateError, match="SUCCESS cannot be retried"):
            await retry_failed(backend, TaskQuery(statuses=[TaskStatus.SUCCESS]), clock=clock)
        with pytest.raises(TaskStateError, match="SUCCESS; only FAILED"):
            await retry_task(backend, "ok", clock=clock)
        with pytest.raises(TaskNotFoundError, match="no task has the id 'nope'"):
            await retry_task(backend, "nope", clock=clock)
        with pytest.raises(TaskNotFoundError):
            await cancel_pending(backend, "nope", clock=clock)


async def test_purge_finished_deletes_old_finished_tasks_in_batches(
    kind: str, tmp_path: Path
) -> None:
    clock = ManualClock(datetime(2030, 1, 10, tzinfo=timezone.utc))
    async with bare_backend(kind, tmp_path, clock) as backend:
        old = clock.now() - timedelta(days=8)
        for i in range(5):
            await backend.create(finished(f"old{i}", TaskStatus.SUCCESS, old))
        await backend.create(finished("recent", TaskStatus.FAILED, clock.now()))
        pending = finished("waiting", TaskStatus.PENDING, old).model_copy(
            update={"finished_at": None, "started_at": None}
        )
        await backend.create(pending)
        batches: list[int] = []

        purged = await purge_finished(
            backend,
            older_than=timedelta(days=7),
            clock=clock,
            batch_size=2,
            progress=batches.append,
        )

        assert purged == 5 and batches == [2, 2, 1]
        left = sorted(r.task_id for r in (await backend.query(TaskQuery())).items)
        assert left == ["recent", "waiting"]
        with pytest.raises(ValueError, match="must not be negative"):
            await purge_finished(backend, older_than=timedelta(days=-1), clock=clock)
