"""Finished tasks expire by retention (on the injected clock) and purge() cleans indexes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.models import TaskQuery, TaskRecord, TaskStatus, TaskUpdate
from taskflow_redis import RedisBackend

from .conftest import keys_matching, opened, unique_prefix

pytestmark = pytest.mark.anyio


@pytest.fixture
async def short(redis_url: str, clock: ManualClock) -> AsyncIterator[RedisBackend]:
    """A backend that keeps finished tasks for one minute."""
    backend = RedisBackend(redis_url, prefix=unique_prefix(), clock=clock, retention=60)
    async with opened(backend):
        yield backend


async def finish(
    backend: RedisBackend,
    clock: ManualClock,
    task_id: str,
    status: TaskStatus = TaskStatus.SUCCESS,
    **fields: object,
) -> None:
    now = clock.now()
    created = await backend.create(
        TaskRecord(task_id=task_id, func_name="tests.job", created_at=now, updated_at=now, **fields)
    )
    assert created.created
    done = await backend.transition(
        task_id,
        expected=[TaskStatus.PENDING],
        new=status,
        update=TaskUpdate(finished_at=clock.now()),
    )
    assert done is not None


async def index_members(backend: RedisBackend) -> int:
    """Count the entries left in every index set of the backend."""
    keys = await keys_matching(backend.client, backend._keys.pattern)
    return sum([int(await backend.client.zcard(key)) for key in keys if b":idx:" in key])


async def test_finished_tasks_older_than_retention_are_deleted(
    short: RedisBackend, clock: ManualClock
) -> None:
    await finish(short, clock, "old", idempotency_key="k", tags={"a": "b"})
    clock.advance(61)
    await finish(short, clock, "new")
    assert await short.get("old") is None
    assert await short.get("new") is not None
    assert await short.find_by_key("k") is None
    page = await short.query(TaskQuery(tags={"a": "b"}))
    assert page.items == []
    stats = await short.stats()
    assert stats.total == 1
    assert stats.by_status == {TaskStatus.SUCCESS: 1}
    assert not await short.client.exists(short._keys.task("old"), short._keys.logs("old"))


async def test_tasks_within_retention_and_active_tasks_stay(
    short: RedisBackend, clock: ManualClock
) -> None:
    await finish(short, clock, "recent")
    now = clock.now()
    await short.create(
        TaskRecord(task_id="active", func_name="tests.job", created_at=now, updated_at=now)
    )
    clock.advance(30)
    await finish(short, clock, "other")
    clock.advance(3600)
    assert await short.get("active") is not None
    assert await short.get("recent") is not None  # nothing finished since it expired


async def test_without_retention_nothing_expires(redis_url: str, clock: ManualClock) -> None:
    backend = RedisBackend(redis_url, prefix=unique_prefix(), clock=clock, retention=None)
    await backend.open()
    try:
        await finish(backend, clock, "a")
        clock.advance(days=365)
        await finish(backend, clock, "b")
        assert await backend.get("a") is not None
    finally:
        await backend.delete_all()
        await backend.close()


async def test_purge_works_in_bounded_batches_and_cleans_the_indexes(
    backend: RedisBackend, clock: ManualClock
) -> None:
    for n in range(5):
        await finish(backend, clock, f"done{n}", tags={"batch": "x"}, queue="mail")
    await finish(backend, clock, "failed", TaskStatus.FAILED, idempotency_key="k")
    now = clock.now()
    await backend.create(
        TaskRecord(task_id="active", func_name="tests.job", created_at=now, updated_at=now)
    )
    cutoff = clock.advance(1)
    counts = []
    while True:
        deleted = await backend.purge(finished_before=cutoff, batch_size=2)
        counts.append(deleted)
        if deleted == 0:
            break
    assert counts == [2, 2, 2, 0]
    # 'active' is left in idx:all, idx:status:pending, idx:func:tests.job, idx:queue:default
    assert await index_members(backend) == 4
    stats = await backend.stats()
    assert stats.total == 1
    assert stats.by_func == {"tests.job": {TaskStatus.PENDING: 1}}
    assert await backend.get("active") is not None


async def test_run_keys_are_forgotten_after_retention(
    short: RedisBackend, clock: ManualClock
) -> None:
    run_at = clock.now()
    assert await short.schedule_once("nightly@1", task_id="a", queue="q", run_at=run_at)
    assert not await short.schedule_once("nightly@1", task_id="b", queue="q", run_at=run_at)
    clock.advance(timedelta(minutes=2).total_seconds())
    await short.purge(finished_before=clock.now())
    assert await short.schedule_once("nightly@1", task_id="c", queue="q", run_at=run_at)
