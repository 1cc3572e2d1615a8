"""Creating tasks: insert-if-absent by id and by idempotency key, create_many, get."""

from __future__ import annotations

from datetime import timezone

import pytest

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.models import KEY_RELEASING_STATUSES, TaskRecord, TaskStatus
from fastapi_taskflow.protocols import TaskBackend

from ._base import ConformanceBase, create_task, make_record, new_id, seconds

__all__ = ["StoreCreateTests"]

KEY_KEEPING = sorted(set(TaskStatus) - KEY_RELEASING_STATUSES, key=lambda s: s.value)
KEY_RELEASING = sorted(KEY_RELEASING_STATUSES, key=lambda s: s.value)


def full_record(clock: ManualClock) -> TaskRecord:
    """A record with every field set to a non-default value."""
    now = clock.now()
    return make_record(
        clock,
        func_name="app.tasks.send_email",
        status=TaskStatus.RUNNING,
        queue="emails",
        priority=7,
        args=["a@example.com", 3, None, {"nested": [1, 2.5, True]}],
        kwargs={"subject": "héllo ✓", "retry": False, "count": 0},
        tags={"tenant": "acme", "kind": "welcome"},
        idempotency_key=new_id("key-"),
        attempt=2,
        max_retries=5,
        requeue_on_interrupt=True,
        created_at=now.replace(microsecond=123456),
        updated_at=now + seconds(1.654321),
        started_at=now + seconds(1),
        finished_at=now + seconds(2.000001),
        error="ValueError: boom",
        result={"sent": 1, "ids": ["x", "y"], "ratio": 0.5, "none": None},
        progress=0.25,
        cancel_requested=True,
        owner="instance-1",
    )


class StoreCreateTests(ConformanceBase):
    """``create``, ``create_many``, ``get`` and ``find_by_key``."""

    async def test_create_new_task_is_stored(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """A new record is created and ``get`` returns it field for field.

        If this fails, check that every TaskRecord field is stored and read back
        (JSON fields ``args``, ``kwargs``, ``tags``, ``result``; datetimes to the
        microsecond, as aware UTC).
        """
        record = full_record(clock)
        result = await backend.create(record)
        assert result.created is True
        assert result.record == record
        stored = await backend.get(record.task_id)
        assert stored == record
        for stamp in (stored.created_at, stored.updated_at, stored.started_at):
            assert stamp is not None and stamp.utcoffset() == timezone.utc.utcoffset(None)

    async def test_create_defaults_round_trip(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """A record with only the required fields round-trips with its defaults.

        If this fails, check that None (``args``, ``result``, ``started_at`` ...) and
        empty values (``tags={}``) are stored as such, not dropped or turned into "".
        """
        record = make_record(clock)
        assert (await backend.create(record)).created
        assert await backend.get(record.task_id) == record

    async def test_get_unknown_returns_none(self, backend: TaskBackend) -> None:
        """``get`` of an id nobody created returns None.

        If this fails, check that get() returns None instead of raising.
        """
        assert await backend.get(new_id()) is None

    async def test_create_same_task_id_returns_existing(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Creating a record whose ``task_id`` exists returns the stored one, unchanged.

        If this fails, check that create() looks up the task id first and writes nothing
        when it exists (a retried create after a lost reply must be harmless).
        """
        first = await create_task(backend, clock, func_name="first")
        clock.advance(5)
        again = make_record(clock, task_id=first.task_id, func_name="second", priority=9)
        result = await backend.create(again)
        assert result.created is False
        assert result.record == first
        assert await backend.get(first.task_id) == first

    async def test_create_with_held_key_returns_holder(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """A second task with an active task's key is not created; the holder is returned.

        If this fails, check that create() is insert-if-absent on the idempotency key.
        """
        key = new_id("key-")
        holder = await create_task(backend, clock, idempotency_key=key)
        other = make_record(clock, idempotency_key=key)
        result = await backend.create(other)
        assert result.created is False
        assert result.record == holder
        assert await backend.get(other.task_id) is None, "nothing may be written"
        assert await backend.find_by_key(key) == holder

    @pytest.mark.parametrize("status", KEY_KEEPING, ids=lambda s: s.value)
    async def test_statuses_that_keep_the_key(
        self, backend: TaskBackend, clock: ManualClock, status: TaskStatus
    ) -> None:
        """A task keeps its key while PENDING, RUNNING, SUCCESS, INTERRUPTED or CANCELLED.

        If this fails, check that only FAILED and REJECTED (``KEY_RELEASING_STATUSES``)
        release an idempotency key, both when a task is moved there by transition() and
        when it is created in that status.
        """
        key = new_id("key-")
        holder = await create_task(backend, clock, idempotency_key=key)
        if status is not TaskStatus.PENDING:
            moved = await backend.transition(holder.task_id, expected=[holder.status], new=status)
            assert moved is not None
        result = await backend.create(make_record(clock, idempotency_key=key))
        assert result.created is False
        assert result.record.task_id == holder.task_id
        assert result.record.status is status
        found = await backend.find_by_key(key)
        assert found is not None and found.task_id == holder.task_id

    @pytest.mark.parametrize("status", KEY_RELEASING, ids=lambda s: s.value)
    async def test_statuses_that_release_the_key(
        self, backend: TaskBackend, clock: ManualClock, status: TaskStatus
    ) -> None:
        """A FAILED or REJECTED task releases its key; a new task may take it.

        If this fails, check that transition() into FAILED/REJECTED frees the key
        atomically, and that the old task stays in the history.
        """
        key = new_id("key-")
        old = await create_task(backend, clock, idempotency_key=key)
        assert await backend.transition(old.task_id, expected=[old.status], new=status)
        assert await backend.find_by_key(key) is None
        new = make_record(clock, idempotency_key=key)
        result = await backend.create(new)
        assert result.created is True
        assert result.record == new
        found = await backend.find_by_key(key)
        assert found is not None and found.task_id == new.task_id
        kept = await backend.get(old.task_id)
        assert kept is not None and kept.status is status

    @pytest.mark.parametrize("status", KEY_RELEASING, ids=lambda s: s.value)
    async def test_created_in_releasing_status_does_not_hold_key(
        self, backend: TaskBackend, clock: ManualClock, status: TaskStatus
    ) -> None:
        """A task created directly as FAILED or REJECTED does not hold its key.

        If this fails, check that create() does not claim the key for a record whose
        status is in ``KEY_RELEASING_STATUSES``.
        """
        key = new_id("key-")
        await create_task(backend, clock, idempotency_key=key, status=status)
        assert await backend.find_by_key(key) is None
        result = await backend.create(make_record(clock, idempotency_key=key))
        assert result.created is True

    async def test_tasks_without_key_never_conflict(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Tasks without an idempotency key, and tasks with different keys, all get created.

        If this fails, check that a NULL/absent key is not treated as a key value.
        """
        for _ in range(3):
            await create_task(backend, clock)
        await create_task(backend, clock, idempotency_key=new_id("key-"))
        await create_task(backend, clock, idempotency_key=new_id("key-"))
        assert (await backend.stats()).total == 5

    async def test_find_by_key(self, backend: TaskBackend, clock: ManualClock) -> None:
        """``find_by_key`` returns the holder, or None for a key nobody holds.

        If this fails, check the lookup by idempotency key.
        """
        key = new_id("key-")
        assert await backend.find_by_key(key) is None
        holder = await create_task(backend, clock, idempotency_key=key)
        await create_task(backend, clock, idempotency_key=new_id("key-"))
        assert await backend.find_by_key(key) == holder

    async def test_create_many(self, backend: TaskBackend, clock: ManualClock) -> None:
        """``create_many`` applies the rules of ``create`` to each record, in order.

        Covers new records, an existing id, a key held by a stored task and a key taken
        by an earlier record of the same batch. If this fails, check that each record is
        checked against the store *and* the records before it in the batch.
        """
        key_stored, key_batch = new_id("key-"), new_id("key-")
        stored = await create_task(backend, clock, idempotency_key=key_stored)
        fresh = make_record(clock)
        same_id = make_record(clock, task_id=stored.task_id, func_name="other")
        held = make_record(clock, idempotency_key=key_stored)
        first_of_key = make_record(clock, idempotency_key=key_batch)
        second_of_key = make_record(clock, idempotency_key=key_batch)
        batch = [fresh, same_id, held, first_of_key, second_of_key]
        results = await backend.create_many(batch)
        assert [r.created for r in results] == [True, False, False, True, False]
        assert [r.record.task_id for r in results] == [
            fresh.task_id,
            stored.task_id,
            stored.task_id,
            first_of_key.task_id,
            first_of_key.task_id,
        ]
        assert results[0].record == fresh
        assert await backend.get(fresh.task_id) == fresh
        assert await backend.get(held.task_id) is None
        assert await backend.get(second_of_key.task_id) is None
        assert (await backend.stats()).total == 3

    async def test_create_many_empty(self, backend: TaskBackend) -> None:
        """``create_many([])`` returns an empty list.

        If this fails, check that an empty batch does not build an empty INSERT.
        """
        assert await backend.create_many([]) == []
