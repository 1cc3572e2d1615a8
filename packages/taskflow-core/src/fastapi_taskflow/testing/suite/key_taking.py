"""Taking an idempotency key back: ``transition(..., take_key=True)``.

An operator retry moves a FAILED task (which released its key) back to PENDING. It must
hold its key again in the same atomic step, or a new task with that key would run the
same work a second time while the retried one is pending or running.
"""

from __future__ import annotations

import pytest

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.errors import IdempotencyKeyHeldError, InvalidOperationError
from fastapi_taskflow.models import CreateResult, TaskRecord, TaskStatus, TaskUpdate
from fastapi_taskflow.protocols import TaskBackend

from ._base import create_task, make_record, new_id
from ._threads import RacingBase

__all__ = ["KeyTakingTests"]

PENDING, RUNNING, FAILED = TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.FAILED

RETRY = TaskUpdate(attempt=0, error=None, started_at=None, finished_at=None, owner="operator")
"""The fields an operator retry resets (see ``fastapi_taskflow.operations.retry_task``)."""


async def failed_task(backend: TaskBackend, clock: ManualClock, key: str) -> TaskRecord:
    """A task with ``key`` that ran and FAILED (so it released its key)."""
    task = await create_task(backend, clock, idempotency_key=key)
    assert await backend.transition(task.task_id, expected=[PENDING], new=RUNNING)
    failed = await backend.transition(
        task.task_id,
        expected=[RUNNING],
        new=FAILED,
        update=TaskUpdate(error="ValueError: boom", finished_at=clock.now()),
    )
    assert failed is not None
    assert await backend.find_by_key(key) is None, "a FAILED task must release its key"
    return failed


class KeyTakingTests(RacingBase):
    """``transition(..., take_key=True)``: a retried task holds its key again."""

    async def test_take_key_makes_the_task_hold_its_key(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """A FAILED task moved to PENDING with ``take_key=True`` holds its key again.

        ``find_by_key`` returns it and a new create with the key answers
        ``created=False`` with it. If this fails, check that transition() sets the
        key's holder (SQL: ``active_key``; Redis: the key -> id mapping) in the same
        atomic step as the status.
        """
        key = new_id("key-")
        task = await failed_task(backend, clock, key)
        now = clock.advance(5)
        moved = await backend.transition(
            task.task_id, expected=[FAILED], new=PENDING, update=RETRY, take_key=True
        )
        assert moved is not None
        assert moved.status is PENDING and moved.error is None and moved.updated_at == now
        found = await backend.find_by_key(key)
        assert found is not None and found.task_id == task.task_id
        assert found.status is PENDING
        duplicate = make_record(clock, idempotency_key=key)
        result = await backend.create(duplicate)
        assert result.created is False, "a new task with a retried task's key was created"
        assert result.record.task_id == task.task_id
        assert await backend.get(duplicate.task_id) is None

    async def test_taken_key_is_released_again_on_failure(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """A retried task that fails again releases its key again, as any task does.

        If this fails, check that a key taken back by transition() is stored exactly as
        one taken by create() (the release on FAILED must find it).
        """
        key = new_id("key-")
        task = await failed_task(backend, clock, key)
        assert await backend.transition(
            task.task_id, expected=[FAILED], new=PENDING, update=RETRY, take_key=True
        )
        assert await backend.transition(task.task_id, expected=[PENDING], new=RUNNING)
        assert await backend.transition(task.task_id, expected=[RUNNING], new=FAILED)
        assert await backend.find_by_key(key) is None
        assert (await backend.create(make_record(clock, idempotency_key=key))).created

    async def test_leaving_failed_without_take_key_keeps_the_key_free(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Without ``take_key`` a FAILED task that moves on does not hold its key.

        If this fails, check that only ``take_key=True`` sets the key's holder (a plain
        transition out of FAILED leaves the key free).
        """
        key = new_id("key-")
        task = await failed_task(backend, clock, key)
        assert await backend.transition(task.task_id, expected=[FAILED], new=PENDING)
        assert await backend.find_by_key(key) is None

    async def test_take_key_held_by_another_task_is_refused(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """When another task holds the key, nothing changes and the holder is named.

        ``IdempotencyKeyHeldError`` carries the holder's id in ``key_holder``; the
        refused task is still FAILED, field for field. If this fails, check that the
        holder is checked in the same atomic step as the change, and that a refused
        change writes nothing (SQL: the unique violation rolls the UPDATE back).
        """
        key = new_id("key-")
        task = await failed_task(backend, clock, key)
        before = await backend.get(task.task_id)
        newer = await create_task(backend, clock, idempotency_key=key)
        clock.advance(5)
        with pytest.raises(IdempotencyKeyHeldError) as raised:
            await backend.transition(
                task.task_id, expected=[FAILED], new=PENDING, update=RETRY, take_key=True
            )
        assert raised.value.key_holder == newer.task_id
        assert raised.value.task_id == task.task_id
        assert newer.task_id in str(raised.value)
        assert await backend.get(task.task_id) == before, "a refused take_key changed the task"
        found = await backend.find_by_key(key)
        assert found is not None and found.task_id == newer.task_id

    async def test_take_key_compares_the_status_first(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """A task not in ``expected`` (or absent) gives None, whoever holds the key.

        If this fails, check that transition(take_key=True) is still a compare-and-set
        on the status before it looks at the key.
        """
        key = new_id("key-")
        task = await failed_task(backend, clock, key)
        await create_task(backend, clock, idempotency_key=key)
        moved = await backend.transition(
            task.task_id, expected=[TaskStatus.CANCELLED], new=PENDING, take_key=True
        )
        assert moved is None
        absent = await backend.transition(new_id(), expected=[FAILED], new=PENDING, take_key=True)
        assert absent is None

    @pytest.mark.parametrize(
        "status", [TaskStatus.INTERRUPTED, TaskStatus.CANCELLED], ids=lambda s: s.value
    )
    async def test_take_key_of_a_task_that_kept_it(
        self, backend: TaskBackend, clock: ManualClock, status: TaskStatus
    ) -> None:
        """An INTERRUPTED or CANCELLED task still holds its key; taking it again is fine.

        If this fails, check that a task is not refused for holding its own key.
        """
        key = new_id("key-")
        task = await create_task(backend, clock, idempotency_key=key)
        assert await backend.transition(task.task_id, expected=[PENDING], new=status)
        moved = await backend.transition(
            task.task_id, expected=[status], new=PENDING, update=RETRY, take_key=True
        )
        assert moved is not None and moved.status is PENDING
        found = await backend.find_by_key(key)
        assert found is not None and found.task_id == task.task_id

    async def test_take_key_needs_a_key_and_a_holding_status(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """``take_key=True`` without a key, or towards FAILED/REJECTED, is refused.

        Both raise ``InvalidOperationError`` and change nothing. If this fails, use the
        checks of ``fastapi_taskflow.key_taking`` before writing.
        """
        plain = await create_task(backend, clock, status=FAILED)
        with pytest.raises(InvalidOperationError):
            await backend.transition(plain.task_id, expected=[FAILED], new=PENDING, take_key=True)
        stored = await backend.get(plain.task_id)
        assert stored is not None and stored.status is FAILED
        keyed = await create_task(backend, clock, idempotency_key=new_id("key-"))
        with pytest.raises(InvalidOperationError):
            await backend.transition(keyed.task_id, expected=[PENDING], new=FAILED, take_key=True)
        stored = await backend.get(keyed.task_id)
        assert stored is not None and stored.status is PENDING

    async def test_racing_take_key_and_creates_leave_one_holder(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """A retry's take_key racing creates with the same key: exactly one holder.

        For each of a few FAILED keyed tasks, one contender moves it back to PENDING
        with ``take_key=True`` while the others create new tasks with its key, from
        this loop and from forks on other threads. Either the retry wins (every create
        answers the retried task) or one create wins (the retry raises
        ``IdempotencyKeyHeldError`` naming it and the task stays FAILED). If this
        fails, check that the key's holder is checked and set in one atomic step (a
        unique index on the key, one script), not looked up first and set after.
        """
        total = self.local + self.threads * self.per_thread
        keys = max(1, min(4, total // 2))
        rounds = total // keys
        names = [new_id("key-") for _ in range(keys)]
        tasks = [await failed_task(backend, clock, key) for key in names]

        def retries(index: int) -> bool:
            slot, turn = index % keys, index // keys
            return turn == (slot * 5) % rounds

        async def work(
            target: TaskBackend, index: int
        ) -> TaskRecord | CreateResult | IdempotencyKeyHeldError | None:
            slot = index % keys
            if not retries(index):
                return await target.create(make_record(clock, idempotency_key=names[slot]))
            try:
                return await target.transition(
                    tasks[slot].task_id, expected=[FAILED], new=PENDING, take_key=True
                )
            except IdempotencyKeyHeldError as exc:
                return exc

        results = await self.race(backend, work)
        for slot, key in enumerate(names):
            mine = [r for i, r in enumerate(results) if i % keys == slot]
            retry = [r for i, r in enumerate(results) if i % keys == slot and retries(i)]
            assert len(retry) == 1
            created = [r for r in mine if isinstance(r, CreateResult) and r.created]
            retried = isinstance(retry[0], TaskRecord)
            assert len(created) + retried == 1, (
                f"{len(created)} creates and {int(retried)} retry took one key"
            )
            holder = tasks[slot].task_id if retried else created[0].record.task_id
            for result in mine:
                if isinstance(result, CreateResult):
                    assert result.record.task_id == holder
            found = await backend.find_by_key(key)
            assert found is not None and found.task_id == holder
            stored = await backend.get(tasks[slot].task_id)
            assert stored is not None
            if retried:
                assert stored.status is PENDING
            else:
                assert isinstance(retry[0], IdempotencyKeyHeldError)
                assert retry[0].key_holder == holder
                assert stored.status is FAILED
