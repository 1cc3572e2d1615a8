"""A corrupt or foreign value under the prefix is reported with a warning and skipped."""

from __future__ import annotations

import asyncio
import logging

import pytest

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.events import LifecycleEvent
from fastapi_taskflow.models import LogEntry, TaskQuery, TaskRecord, TaskStatus
from taskflow_redis import RedisBackend

pytestmark = pytest.mark.anyio


def record(clock: ManualClock, task_id: str, **fields: object) -> TaskRecord:
    now = clock.now()
    return TaskRecord(
        task_id=task_id, func_name="tests.job", created_at=now, updated_at=now, **fields
    )


async def test_a_foreign_string_at_a_task_key_is_skipped(
    backend: RedisBackend, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    await backend.client.set(backend._keys.task("alien"), "not a record")
    with caplog.at_level(logging.WARNING, logger="taskflow_redis"):
        assert await backend.get("alien") is None
        moved = await backend.transition(
            "alien", expected=[TaskStatus.PENDING], new=TaskStatus.RUNNING
        )
        assert moved is None
    assert "not a taskflow record" in caplog.text
    assert await backend.client.get(backend._keys.task("alien")) == b"not a record"


async def test_create_over_a_foreign_value_replaces_it_with_a_warning(
    backend: RedisBackend, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    await backend.client.set(backend._keys.task("t1"), "junk")
    with caplog.at_level(logging.WARNING, logger="taskflow_redis"):
        result = await backend.create(record(clock, "t1"))
    assert result.created
    assert "replaced a value" in caplog.text
    assert (await backend.get("t1")) is not None


async def test_a_corrupt_record_in_the_indexes_is_skipped_by_queries(
    backend: RedisBackend, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    for n in range(3):
        await backend.create(record(clock, f"t{n}"))
        clock.advance(1)
    await backend.client.hset(backend._keys.task("t1"), "d", "{broken json")
    with caplog.at_level(logging.WARNING, logger="taskflow_redis"):
        page = await backend.query(TaskQuery())
        assert [item.task_id for item in page.items] == ["t2", "t0"]
        assert await backend.get("t1") is None
    assert "skipped task t1" in caplog.text
    stats = await backend.stats()
    assert stats.total == 3


async def test_a_corrupt_log_entry_is_skipped(
    backend: RedisBackend, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    await backend.create(record(clock, "t1"))
    await backend.append_logs("t1", [LogEntry(timestamp=clock.now(), message="one")])
    await backend.client.rpush(backend._keys.logs("t1"), "garbage")
    await backend.append_logs("t1", [LogEntry(timestamp=clock.now(), message="two")])
    with caplog.at_level(logging.WARNING, logger="taskflow_redis"):
        fetched = await backend.get("t1")
    assert fetched is not None
    assert [entry.message for entry in fetched.logs] == ["one", "two"]
    assert "corrupt log entry" in caplog.text


async def test_a_log_key_of_the_wrong_type_does_not_break_get(
    backend: RedisBackend, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    await backend.create(record(clock, "t1"))
    await backend.client.set(backend._keys.logs("t1"), "junk")
    with caplog.at_level(logging.WARNING, logger="taskflow_redis"):
        await backend.append_logs("t1", [LogEntry(timestamp=clock.now(), message="x")])
        fetched = await backend.get("t1")
    assert fetched is not None and fetched.logs == []
    assert "not a list" in caplog.text


async def test_a_stale_idempotency_entry_is_taken_over(
    backend: RedisBackend, clock: ManualClock
) -> None:
    await backend.client.hset(backend._keys.idem, "k1", "vanished")
    result = await backend.create(record(clock, "t1", idempotency_key="k1"))
    assert result.created
    holder = await backend.find_by_key("k1")
    assert holder is not None and holder.task_id == "t1"


async def test_a_foreign_message_on_the_event_channel_is_skipped(
    backend: RedisBackend, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    event = LifecycleEvent(
        task_id="t1", func_name="tests.job", timestamp=clock.now(), status=TaskStatus.RUNNING
    )
    with caplog.at_level(logging.WARNING, logger="taskflow_redis"):
        async with backend.subscribe() as events:
            await backend.client.publish(backend._keys.channel, b"\x00not json")
            await backend.publish(event)
            received = await asyncio.wait_for(anext(aiter(events)), timeout=10)
    assert received == event
    assert "not a taskflow event" in caplog.text


async def test_a_record_with_invalid_field_json_is_skipped(
    backend: RedisBackend, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    await backend.create(record(clock, "t1"))
    await backend.client.hset(backend._keys.task("t1"), "attempt", "[oops")
    with caplog.at_level(logging.WARNING, logger="taskflow_redis"):
        assert await backend.get("t1") is None
        assert (await backend.query(TaskQuery())).items == []
    assert "is corrupt" in caplog.text
