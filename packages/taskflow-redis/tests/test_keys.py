"""Key layout: every key is under ``{prefix}:`` (one cluster slot) and nothing leaks."""

from __future__ import annotations

from datetime import timedelta

import pytest
from redis.crc import key_slot

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.events import LogEvent
from fastapi_taskflow.models import LogEntry, TaskRecord, TaskStatus, TaskUpdate
from taskflow_redis import RedisBackend

pytestmark = pytest.mark.anyio


async def all_keys(backend: RedisBackend) -> list[bytes]:
    return [key async for key in backend.client.scan_iter(match=backend._keys.pattern)]


async def exercise(backend: RedisBackend, clock: ManualClock) -> None:
    """Touch every kind of key the backend writes."""
    now = clock.now()
    record = TaskRecord(
        task_id="t1",
        func_name="shop.send_mail",
        queue="mail",
        created_at=now,
        updated_at=now,
        tags={"tenant": "acme", "odd key": "x=y"},
        idempotency_key="order-1",
    )
    await backend.create(record)
    await backend.enqueue("t1", queue="mail", priority=3)
    await backend.enqueue("t2", queue="mail", not_before=now + timedelta(seconds=30))
    [claim] = await backend.claim(queue="mail", owner="w1")
    assert claim.task_id == "t1"
    await backend.transition("t1", expected=[TaskStatus.PENDING], new=TaskStatus.RUNNING)
    await backend.append_logs("t1", [LogEntry(timestamp=now, message="hello")])
    await backend.acquire_lock("nightly", owner="w1", ttl_seconds=60)
    await backend.beat("w1")
    await backend.schedule_once("nightly@1", task_id="t3", queue="cron", run_at=now)
    await backend.publish(LogEvent(task_id="t1", func_name="f", timestamp=now, message="m"))
    await backend.transition(
        "t1",
        expected=[TaskStatus.RUNNING],
        new=TaskStatus.SUCCESS,
        update=TaskUpdate(finished_at=now),
    )


async def test_every_key_is_hash_tagged_into_one_slot(
    backend: RedisBackend, clock: ManualClock
) -> None:
    await exercise(backend, clock)
    keys = await all_keys(backend)
    assert len(keys) >= 10
    tag = ("{" + backend.prefix + "}:").encode()
    assert all(key.startswith(tag) for key in keys)
    assert {key_slot(key) for key in keys} == {key_slot(tag)}
    names = {key.decode().removeprefix(tag.decode()) for key in keys}
    assert {"task:t1", "logs:t1", "idem", "idx:all", "idx:finished"} <= names
    assert {"idx:func:shop.send_mail", "idx:queue:mail", "idx:tag:6:tenant=acme"} <= names
    assert {"queue:mail:items", "queue:mail:delayed", "beats"} <= names
    assert {"locks", "runkeys", "seq", "stats:status", "stats:func"} <= names
    [log] = [name for name in names if name.startswith("claim:")]
    assert 0 < await backend.client.ttl(tag.decode() + log) <= 86_400


async def test_purging_everything_leaves_only_bookkeeping_keys(
    backend: RedisBackend, clock: ManualClock
) -> None:
    await exercise(backend, clock)
    await backend.dequeue("t2", queue="mail")
    await backend.dequeue("t3", queue="cron")
    # The claim of t1 logged what it took (for a lost reply); the next claim deletes it.
    assert await backend.claim(queue="mail", owner="w1") == []
    await backend.release_lock("nightly", owner="w1")
    await backend.forget_instance("w1")
    assert await backend.purge(finished_before=clock.advance(1)) == 1
    tag = "{" + backend.prefix + "}:"
    names = {key.decode().removeprefix(tag) for key in await all_keys(backend)}
    assert names == {"seq", "runkeys", "schema"}


async def test_delete_all_removes_every_key_of_the_prefix_only(
    backend: RedisBackend, clock: ManualClock, redis_url: str
) -> None:
    other = RedisBackend(redis_url, prefix=backend.prefix + "-other", clock=clock)
    await other.open()
    try:
        await exercise(backend, clock)
        await exercise(other, clock)
        assert await backend.delete_all() > 0
        assert await all_keys(backend) == []
        assert await other.get("t1") is not None
    finally:
        await other.delete_all()
        await other.close()
