"""Atomicity under real concurrency: one loop's gather plus forks on other threads."""

from __future__ import annotations

import threading
import time

import anyio
import anyio.to_thread

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.events import LifecycleEvent, LogEvent
from fastapi_taskflow.models import CreateResult, TaskRecord, TaskStatus, TaskUpdate
from fastapi_taskflow.protocols import TaskBackend

from ._base import create_task, make_record, new_id
from ._threads import RacingBase, contend
from .events import sample_events
from .queues import Q, stored_ids

__all__ = ["ConcurrencyTests"]


class ConcurrencyTests(RacingBase):
    """Races: each test runs one operation from many coroutines and threads at once.

    ``local`` coroutines share the fixture's backend; each of ``threads`` threads opens
    a fork on its own event loop and runs ``per_thread`` coroutines on it.
    """

    async def test_racing_creates_with_one_key(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Many creates with one idempotency key make exactly one task.

        Every caller gets that task back. If this fails, check that create() is
        insert-if-absent on the key in one atomic step (a unique index, SET NX, a
        transaction with a lock) rather than "look up, then insert".
        """
        key = new_id("key-")

        async def work(target: TaskBackend, index: int) -> CreateResult:
            return await target.create(make_record(clock, idempotency_key=key))

        results = await self.race(backend, work)
        winners = [r for r in results if r.created]
        assert len(winners) == 1, f"{len(winners)} tasks were created for one key"
        winner = winners[0].record
        assert {r.record.task_id for r in results} == {winner.task_id}
        assert await backend.find_by_key(key) == winner
        assert (await backend.stats()).total == 1

    async def test_racing_creates_of_one_task_id(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Many creates of one record (retries after lost replies) make it once.

        If this fails, check that the task id is a primary key and that a duplicate
        insert is turned into ``created=False`` rather than an error.
        """
        record = make_record(clock)

        async def work(target: TaskBackend, index: int) -> CreateResult:
            return await target.create(record)

        results = await self.race(backend, work)
        assert sum(r.created for r in results) == 1
        assert all(r.record == record for r in results)

    async def test_racing_transitions_one_winner(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Of many PENDING -> RUNNING transitions of a task, exactly one succeeds.

        Ten tasks, every contender trying each; the winner's update is the one stored.
        If this fails, check that transition() is a single conditional write
        (``UPDATE ... WHERE status IN (...)`` or a script), not read-then-write.
        """
        tasks = [await create_task(backend, clock) for _ in range(10)]

        async def work(target: TaskBackend, index: int) -> list[TaskRecord | None]:
            return [
                await target.transition(
                    task.task_id,
                    expected=[TaskStatus.PENDING],
                    new=TaskStatus.RUNNING,
                    update=TaskUpdate(owner=f"w{index}"),
                )
                for task in tasks
            ]

        results = await self.race(backend, work)
        for position, task in enumerate(tasks):
            won = [attempts[position] for attempts in results if attempts[position] is not None]
            assert len(won) == 1, f"{len(won)} callers moved one task to RUNNING"
            stored = await backend.get(task.task_id)
            assert stored is not None and stored.status is TaskStatus.RUNNING
            winner = won[0]
            assert winner is not None and stored.owner == winner.owner

    async def test_racing_claimers_never_double_claim(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Claimers racing over 200 queued tasks claim each exactly once, all of them,
        and each record ends up owned by the one that claimed it.

        If this fails, check that claim() selects, removes and sets the record's owner
        in one atomic step (``FOR UPDATE SKIP LOCKED``, ``DELETE ... RETURNING``, a Lua
        script).
        """
        ids = await stored_ids(backend, clock, 200)
        for task_id in ids:
            await backend.enqueue(task_id, queue=Q)

        async def work(target: TaskBackend, index: int) -> list[str]:
            claimed: list[str] = []
            while batch := await target.claim(queue=Q, owner=f"w{index}", limit=1 + index % 4):
                claimed.extend(c.task_id for c in batch)
            return claimed

        results = await self.race(backend, work)
        claimed = [task_id for batch in results for task_id in batch]
        assert len(claimed) == len(set(claimed)), "a task was handed to two claimers"
        assert sorted(claimed) == sorted(ids)
        assert await backend.queue_length(Q) == 0
        for index, batch in enumerate(results):
            for task_id in batch:
                stored = await backend.get(task_id)
                assert stored is not None and stored.owner == f"w{index}", (
                    f"{task_id} was claimed by w{index} but its record is owned by "
                    f"{stored and stored.owner!r}"
                )

    async def test_racing_enqueues_of_one_task(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Many enqueues of one task leave it on the queue once.

        If this fails, check that enqueue() is an atomic upsert on ``(queue, task_id)``.
        """
        [task_id] = await stored_ids(backend, clock, 1)

        async def work(target: TaskBackend, index: int) -> None:
            await target.enqueue(task_id, queue=Q, priority=index % 3)

        await self.race(backend, work)
        assert await backend.queue_length(Q) == 1
        claims = await backend.claim(queue=Q, owner="w", limit=10)
        assert [c.task_id for c in claims] == [task_id]

    async def test_racing_schedule_once_and_locks(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Racing ``schedule_once`` calls with one run key enqueue once; one lock owner wins.

        If this fails, check that schedule_once() records the run key and enqueues in one
        atomic step, and that acquire_lock() is a conditional write.
        """
        ids = await stored_ids(backend, clock, self.local + self.threads * self.per_thread)
        run_key = new_id("run-")

        async def work(target: TaskBackend, index: int) -> tuple[bool, bool]:
            scheduled = await target.schedule_once(
                run_key, task_id=ids[index], queue=Q, run_at=clock.now()
            )
            locked = await target.acquire_lock("tick", owner=f"o{index}", ttl_seconds=30)
            return scheduled, locked

        results = await self.race(backend, work)
        assert sum(scheduled for scheduled, _ in results) == 1
        assert sum(locked for _, locked in results) == 1
        assert await backend.queue_length(Q) == 1

    async def test_events_from_other_threads(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Events published by forks on other threads wake this loop's subscriber.

        The subscriber is already waiting when they are published, and each publisher's
        events arrive in its order. If this fails (or times out), check that a
        subscriber is woken from any thread (``loop.call_soon_threadsafe`` for in-process
        fan-out) and that each publisher's messages stay ordered.
        """
        prefix = new_id("ev-")
        received_all = threading.Event()

        async def work(target: TaskBackend, index: int) -> None:
            await anyio.sleep(0.05)  # let the subscriber block on its empty stream first
            for event in sample_events(clock, f"{prefix}-{index}"):
                await target.publish(event)
            # Stay alive until the subscriber has everything, so nothing but the
            # publication itself can wake the subscriber's loop.
            await anyio.to_thread.run_sync(received_all.wait, self.event_timeout)

        expected = {
            f"{prefix}-{i}": sample_events(clock, f"{prefix}-{i}")
            for i in range(self.threads * self.per_thread)
        }
        received: dict[str, list[LifecycleEvent | LogEvent]] = {key: [] for key in expected}
        total = sum(len(events) for events in expected.values())

        async def publishers() -> None:
            await contend(
                backend,
                work,
                local=0,
                threads=self.threads,
                per_thread=self.per_thread,
                time_limit=self.concurrency_timeout,
            )

        async with backend.subscribe() as stream, anyio.create_task_group() as group:
            group.start_soon(publishers)
            started = time.monotonic()
            try:
                with anyio.fail_after(self.event_timeout):
                    count = 0
                    while count < total:
                        event = await anext(stream)
                        if event.task_id in received:
                            received[event.task_id].append(event)
                            count += 1
                waited = time.monotonic() - started
            finally:
                received_all.set()
        assert received == expected
        assert waited < self.event_timeout / 2, (
            f"events from other threads took {waited:.1f}s to arrive; check that publish() "
            "wakes a subscriber's event loop from any thread"
        )
