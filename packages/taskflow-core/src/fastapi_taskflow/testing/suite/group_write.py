"""``write_many``: new records and status changes in one write (the whole group commit)."""

from __future__ import annotations

import asyncio

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.models import CreateResult, TaskRecord, TaskStatus, TaskUpdate, Transition
from fastapi_taskflow.protocols import TaskBackend

from ._base import create_task, make_record, new_id, read_back
from ._threads import RacingBase

__all__ = ["GroupWriteTests"]

PENDING, RUNNING, SUCCESS, FAILED = (
    TaskStatus.PENDING,
    TaskStatus.RUNNING,
    TaskStatus.SUCCESS,
    TaskStatus.FAILED,
)


def _step(
    task_id: str, expected: set[TaskStatus], new: TaskStatus, update: TaskUpdate | None = None
) -> Transition:
    return Transition(task_id=task_id, expected=frozenset(expected), new=new, update=update)


def _created(results: list[CreateResult]) -> list[tuple[bool, str]]:
    return [(result.created, result.record.task_id) for result in results]


def _moved(results: list[TaskRecord | None]) -> list[str | None]:
    return [None if record is None else record.task_id for record in results]


class GroupWriteTests(RacingBase):
    """``write_many``: ``create_many`` then ``transition_many`` as one write."""

    async def test_write_many_creates_then_changes(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """One call with new records and status changes gives, item by item, what
        ``create_many`` then ``transition_many`` would.

        Covers a new record, an existing id, a key held by a stored task, a change that
        succeeds, one that is refused, one on a missing task, and a change to a task
        created by the same call (the creates come first). If this fails, check that
        your combined write runs the creates before the changes, that each create obeys
        ``create`` and each change ``transition``, and that the results keep the order
        of each sequence.
        """
        key = new_id("key-")
        holder = await create_task(backend, clock, idempotency_key=key)
        running = await create_task(backend, clock, status=RUNNING, owner="me")
        waiting = await create_task(backend, clock)
        fresh, started_with = make_record(clock), make_record(clock)
        same_id = make_record(clock, task_id=holder.task_id, func_name="other")
        held = make_record(clock, idempotency_key=key)
        missing = new_id()
        now = clock.advance(1)
        created, moved = await backend.write_many(
            [fresh, same_id, held, started_with],
            [
                _step(running.task_id, {RUNNING}, SUCCESS, TaskUpdate(result=7, owner=None)),
                _step(waiting.task_id, {RUNNING}, FAILED, TaskUpdate(error="not running")),
                _step(missing, {PENDING}, RUNNING),
                _step(started_with.task_id, {PENDING}, RUNNING, TaskUpdate(owner="me")),
            ],
        )
        assert _created(created) == [
            (True, fresh.task_id),
            (False, holder.task_id),
            (False, holder.task_id),
            (True, started_with.task_id),
        ]
        assert created[0].record == fresh
        assert _moved(read_back(moved)) == [running.task_id, None, None, started_with.task_id]
        finished, _, _, started = read_back(moved)
        assert finished == running.model_copy(
            update={"status": SUCCESS, "result": 7, "owner": None, "updated_at": now}
        )
        assert started == started_with.model_copy(
            update={"status": RUNNING, "owner": "me", "updated_at": now}
        )
        assert await backend.get(fresh.task_id) == fresh
        assert await backend.get(held.task_id) is None
        assert await backend.get(running.task_id) == finished
        assert await backend.get(waiting.task_id) == waiting
        assert await backend.get(missing) is None
        stats = await backend.stats()
        assert stats.total == 5
        assert stats.by_status == {PENDING: 3, RUNNING: 1, SUCCESS: 1}
        assert await backend.owned("me") == [started_with.task_id]

    async def test_write_many_with_one_side_empty(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Either sequence may be empty; both empty writes nothing and returns two empty
        lists.

        If this fails, check that an empty side sends no statement (an empty INSERT, an
        empty ``IN ()`` or an empty script argument list is an error on some servers).
        """
        assert await backend.write_many([], []) == ([], [])
        record = make_record(clock)
        created, moved = await backend.write_many([record], [])
        assert _created(created) == [(True, record.task_id)] and moved == []
        created, moved = await backend.write_many([], [_step(record.task_id, {PENDING}, RUNNING)])
        assert created == [] and _moved(read_back(moved)) == [record.task_id]
        stored = await backend.get(record.task_id)
        assert stored is not None and stored.status is RUNNING

    async def test_racing_write_many_one_winner_per_task(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Contenders each sending one ``write_many`` (their own new record plus a start
        of the same ten PENDING tasks): every task starts exactly once, and every new
        record is created.

        If this fails, check that the changes of a combined write are conditional writes
        on the current status inside the same transaction or script as the creates, and
        that creates and changes of concurrent calls cannot deadlock (lock rows in one
        order, or retry the transaction).
        """
        tasks = [await create_task(backend, clock) for _ in range(10)]
        records: dict[int, TaskRecord] = {}

        async def work(target: TaskBackend, index: int) -> list[TaskRecord | None]:
            records[index] = make_record(clock)
            order = tasks if index % 2 else list(reversed(tasks))
            created, moved = await target.write_many(
                [records[index]],
                [
                    _step(t.task_id, {PENDING}, RUNNING, TaskUpdate(owner=f"w{index}"))
                    for t in order
                ],
            )
            assert created[0].created
            moved_back = read_back(moved)
            return moved_back if index % 2 else list(reversed(moved_back))

        results = await self.race(backend, work)
        for position, task in enumerate(tasks):
            won = [attempts[position] for attempts in results if attempts[position] is not None]
            assert len(won) == 1, f"{len(won)} writes moved one task to RUNNING"
            winner, stored = won[0], await backend.get(task.task_id)
            assert winner is not None and stored is not None
            assert stored.status is RUNNING and stored.owner == winner.owner
        for record in records.values():
            assert await backend.get(record.task_id) == record

    async def test_write_many_calls_in_flight_together(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """As many ``write_many`` calls as the backend's ``concurrent_writes`` (at least
        two), sent at once from one event loop on distinct tasks — the engine's group
        commit with that many writes in flight — each give what they give alone.

        ``concurrent_writes``, when the backend has it, is a whole number of at least 1.
        If this fails, check that two calls never share a connection at the same time
        (a call that finds its connection busy takes another), and that neither waits
        for the other to finish a transaction it has not begun.
        """
        declared = getattr(backend, "concurrent_writes", 1)
        assert type(declared) is int and declared >= 1, (
            f"concurrent_writes must be a whole number of at least 1, got {declared!r}"
        )
        running = [
            await create_task(backend, clock, status=RUNNING, owner="me")
            for _ in range(max(2, declared))
        ]
        fresh = [make_record(clock) for _ in running]
        now = clock.advance(1)
        writes = [
            backend.write_many(
                [record],
                [
                    _step(record.task_id, {PENDING}, RUNNING, TaskUpdate(owner="me")),
                    _step(done.task_id, {RUNNING}, SUCCESS, TaskUpdate(result=1, owner=None)),
                ],
            )
            for record, done in zip(fresh, running, strict=True)
        ]
        results = await asyncio.gather(*writes)
        for (created, moved), record, done in zip(results, fresh, running, strict=True):
            assert _created(created) == [(True, record.task_id)]
            started, finished = read_back(moved)
            assert started == record.model_copy(
                update={"status": RUNNING, "owner": "me", "updated_at": now}
            )
            assert finished == done.model_copy(
                update={"status": SUCCESS, "result": 1, "owner": None, "updated_at": now}
            )
            assert await backend.get(record.task_id) == started
            assert await backend.get(done.task_id) == finished
        stats = await backend.stats()
        assert stats.by_status == {RUNNING: len(fresh), SUCCESS: len(running)}
