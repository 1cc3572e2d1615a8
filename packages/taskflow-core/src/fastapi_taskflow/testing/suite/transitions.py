"""Compare-and-set status transitions and field updates."""

from __future__ import annotations

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.models import LogEntry, TaskStatus, TaskUpdate
from fastapi_taskflow.protocols import TaskBackend

from ._base import ConformanceBase, create_task, make_record, new_id

__all__ = ["TransitionTests"]

PENDING, RUNNING, SUCCESS, FAILED = (
    TaskStatus.PENDING,
    TaskStatus.RUNNING,
    TaskStatus.SUCCESS,
    TaskStatus.FAILED,
)


class TransitionTests(ConformanceBase):
    """``transition`` (compare-and-set) and ``update``."""

    async def test_transition_moves_status(self, backend: TaskBackend, clock: ManualClock) -> None:
        """A transition whose ``expected`` holds the current status succeeds.

        The returned record has the new status and ``updated_at`` equal to the clock's
        now, and ``get`` sees the same. If this fails, check that transition() writes the
        status and stamps ``updated_at`` with ``self.clock.now()``.
        """
        task = await create_task(backend, clock)
        now = clock.advance(3)
        moved = await backend.transition(task.task_id, expected=[PENDING], new=RUNNING)
        assert moved is not None
        assert moved.status is RUNNING
        assert moved.updated_at == now
        assert moved.task_id == task.task_id and moved.func_name == task.func_name
        assert moved.created_at == task.created_at
        stored = await backend.get(task.task_id)
        assert stored is not None
        assert stored.status is RUNNING and stored.updated_at == now

    async def test_transition_applies_update(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """The ``update`` of a transition is written in the same step; unset fields stay.

        If this fails, check that only ``update.changes()`` (the fields explicitly set)
        are written, including JSON ``result`` and datetimes.
        """
        task = await create_task(backend, clock, error="old", progress=0.5, owner="a")
        started = clock.advance(1)
        update = TaskUpdate(attempt=1, started_at=started, owner="worker-1")
        moved = await backend.transition(
            task.task_id, expected=[PENDING], new=RUNNING, update=update
        )
        assert moved is not None
        assert (moved.attempt, moved.started_at, moved.owner) == (1, started, "worker-1")
        assert moved.error == "old" and moved.progress == 0.5, "unset fields must not change"
        finished = clock.advance(2)
        result = {"rows": [1, 2, 3], "ok": True, "name": "x"}
        done = await backend.transition(
            task.task_id,
            expected=[RUNNING],
            new=SUCCESS,
            update=TaskUpdate(finished_at=finished, result=result, progress=1.0, error=None),
        )
        assert done is not None
        assert done.status is SUCCESS and done.finished_at == finished
        assert done.result == result and done.progress == 1.0
        assert done.error is None, "a field explicitly set to None is cleared"
        assert done.started_at == started and done.owner == "worker-1"
        assert await backend.get(task.task_id) == done

    async def test_transition_wrong_expected_writes_nothing(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """A transition whose ``expected`` misses the current status returns None.

        Nothing is written: not the status, not the update, not ``updated_at``. If this
        fails, check that the status check and the write are one atomic statement.
        """
        task = await create_task(backend, clock)
        clock.advance(5)
        update = TaskUpdate(owner="intruder", error="x")
        assert (
            await backend.transition(task.task_id, expected=[RUNNING], new=SUCCESS, update=update)
            is None
        )
        assert await backend.transition(task.task_id, expected=[], new=RUNNING) is None
        assert await backend.get(task.task_id) == task

    async def test_transition_accepts_any_expected_status(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """``expected`` is a collection: any member matching the status is enough.

        If this fails, check that transition() tests membership (``IN (...)``).
        """
        task = await create_task(backend, clock)
        moved = await backend.transition(
            task.task_id, expected={RUNNING, PENDING}, new=FAILED, update=TaskUpdate(error="e")
        )
        assert moved is not None and moved.status is FAILED
        again = await backend.transition(task.task_id, expected=(PENDING, RUNNING), new=SUCCESS)
        assert again is None

    async def test_records_handed_out_are_snapshots(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """What a store hands out, and what it is handed, never changes afterwards.

        The record given to ``create()``, and the records ``create()``, ``transition()``,
        ``update()``, ``adopt()`` and ``get()`` return, keep the values they had when
        the call returned, whatever happens to the task later. If this fails, check
        that a store keeps its own copy of a created record and returns copies, not the
        object it keeps (and changes in place).
        """
        given = make_record(clock, owner="a")
        created = (await backend.create(given)).record
        clock.advance(1)
        running = await backend.transition(given.task_id, expected=[PENDING], new=RUNNING)
        read = await backend.get(given.task_id)
        clock.advance(1)
        updated = await backend.update(given.task_id, TaskUpdate(progress=0.5))
        adopted = await backend.adopt(given.task_id, owner="a", new_owner="b")
        clock.advance(1)
        await backend.transition(
            given.task_id, expected=[RUNNING], new=SUCCESS, update=TaskUpdate(result=1)
        )
        assert running is not None and read is not None
        assert updated is not None and adopted is not None
        assert (given.status, given.owner, given.result) == (PENDING, "a", None)
        assert (created.status, created.owner) == (PENDING, "a")
        assert (running.status, running.progress) == (RUNNING, None)
        assert (read.status, read.owner) == (RUNNING, "a")
        assert (updated.progress, updated.owner) == (0.5, "a")
        assert (adopted.status, adopted.owner, adopted.result) == (RUNNING, "b", None)

    async def test_transition_unknown_task(self, backend: TaskBackend) -> None:
        """A transition of an id nobody created returns None and creates nothing.

        If this fails, check that transition() does not upsert.
        """
        task_id = new_id()
        assert await backend.transition(task_id, expected=[PENDING], new=RUNNING) is None
        assert await backend.get(task_id) is None

    async def test_transition_returns_no_logs(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """The record a transition returns carries no logs (they are not loaded).

        If this fails, check that transition() does not read the task's logs.
        """
        task = await create_task(backend, clock)
        entry = LogEntry(timestamp=clock.now(), message="hello")
        await backend.append_logs(task.task_id, [entry])
        moved = await backend.transition(task.task_id, expected=[PENDING], new=RUNNING)
        assert moved is not None and moved.logs == []
        stored = await backend.get(task.task_id)
        assert stored is not None and stored.logs == [entry], "logs survive a transition"

    async def test_update_writes_fields_not_status(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """``update`` writes the set fields and leaves the status alone.

        If this fails, check that update() applies ``update.changes()`` only and never
        touches ``status``.
        """
        task = await create_task(backend, clock, error="e")
        await backend.transition(task.task_id, expected=[PENDING], new=RUNNING)
        updated = await backend.update(
            task.task_id, TaskUpdate(progress=0.75, cancel_requested=True, result=[1, "two"])
        )
        assert updated is not None
        assert updated.status is RUNNING
        assert (updated.progress, updated.cancel_requested, updated.result) == (
            0.75,
            True,
            [1, "two"],
        )
        assert updated.error == "e"
        cleared = await backend.update(task.task_id, TaskUpdate(error=None, progress=None))
        assert cleared is not None and cleared.error is None and cleared.progress is None
        assert cleared.cancel_requested is True
        assert await backend.get(task.task_id) == cleared

    async def test_update_with_nothing_set(self, backend: TaskBackend, clock: ManualClock) -> None:
        """An empty ``TaskUpdate()`` changes no field.

        If this fails, check that update() copes with an empty change set.
        """
        task = await create_task(backend, clock, progress=0.1)
        updated = await backend.update(task.task_id, TaskUpdate())
        assert updated is not None
        assert updated.model_dump(exclude={"updated_at"}) == task.model_dump(exclude={"updated_at"})

    async def test_update_unknown_task(self, backend: TaskBackend) -> None:
        """``update`` of an id nobody created returns None and creates nothing.

        If this fails, check that update() does not upsert.
        """
        task_id = new_id()
        assert await backend.update(task_id, TaskUpdate(progress=0.5)) is None
        assert await backend.get(task_id) is None

    async def test_status_history_round_trip(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """A task walks PENDING -> RUNNING -> PENDING (retry) -> RUNNING -> FAILED.

        If this fails, check that transitions read the current status each time rather
        than a cached one.
        """
        task = await create_task(backend, clock, max_retries=1)
        steps = [(PENDING, RUNNING), (RUNNING, PENDING), (PENDING, RUNNING), (RUNNING, FAILED)]
        for attempt, (old, new) in enumerate(steps):
            clock.advance(1)
            moved = await backend.transition(
                task.task_id, expected=[old], new=new, update=TaskUpdate(attempt=attempt)
            )
            assert moved is not None, f"step {old.value} -> {new.value} was refused"
            assert moved.status is new and moved.attempt == attempt
            assert moved.updated_at == clock.now()
