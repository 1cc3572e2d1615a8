"""The engine's group commit on a shared store: new records ride with status changes.

Requests in flight keep adding tasks while earlier tasks start and finish. The records
the write buffer holds and the starts and finishes waiting at the same moment go to the
store in one ``write_many`` (one transaction), not in two writes taking turns.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager, TaskStatus
from fastapi_taskflow.errors import BackendUnavailableError

pytestmark = pytest.mark.anyio

WAVE = 30


def _counting_manager(place: Any) -> tuple[TaskManager, Any, list[int]]:
    """A manager on ``place``, a task returning its argument, and the arguments it ran
    with, in order."""
    tm = TaskManager(backend=place.manager_url(), publish_events=False)
    runs: list[int] = []

    @tm.task()
    async def job(i: int) -> int:
        runs.append(i)
        return i

    return tm, job, runs


async def test_records_and_status_changes_share_writes(place: Any) -> None:
    """Tasks finishing while new requests flush their records: the finishes and the new
    records go to the store together, in the same ``write_many`` calls."""
    tm = TaskManager(backend=place.manager_url(), publish_events=False)
    gate = asyncio.Event()

    @tm.task()
    async def job(i: int, wait: bool) -> int:
        if wait:
            await gate.wait()
        return i

    async def request(i: int, *, wait: bool) -> str:
        container = ManagedBackgroundTasks(tm)
        task_id = container.add_task(job, i, wait)
        await tm._engine.flush()  # what install()'s middleware does before the response
        await container()
        return task_id

    async with tm:
        backend = tm._engine.backend
        sides: Counter[str] = Counter()
        write_many = backend.write_many

        async def counted(creates: Any, transitions: Any) -> Any:
            sides["both" if creates and transitions else "one"] += 1
            return await write_many(creates, transitions)

        backend.write_many = counted  # type: ignore[method-assign]
        first = [asyncio.create_task(request(i, wait=True)) for i in range(WAVE)]
        deadline = asyncio.get_running_loop().time() + 30
        while (await tm.store.astats()).by_status.get(TaskStatus.RUNNING, 0) < WAVE:
            assert asyncio.get_running_loop().time() < deadline, "the first wave never started"
            await asyncio.sleep(0.01)
        engine = tm._engine
        group = engine._group_commit
        assert group is not None
        async with engine.pending.write_slot():  # the next write waits for it
            gate.set()  # the first wave's finishes and the second's records gather
            second = [asyncio.create_task(request(WAVE + i, wait=False)) for i in range(WAVE)]
            while len(group._changes) < WAVE or len(engine.pending) < WAVE:
                assert asyncio.get_running_loop().time() < deadline, "nothing gathered"
                await asyncio.sleep(0.001)
        ids = await asyncio.gather(*first, *second)
        records = [await tm.store.aget(task_id) for task_id in ids]
    assert [r.status if r else None for r in records] == [TaskStatus.SUCCESS] * (2 * WAVE)
    assert [r.result for r in records if r] == list(range(2 * WAVE))
    assert sides["both"] >= 1, f"records and status changes never shared a write: {sides}"
    assert sides["one"] == 0, "write_many is called only when both sides have something"


async def test_a_task_started_before_any_flush_is_created_running_by_one_write(
    place: Any,
) -> None:
    """A container awaited without a flush first (no response carried the ids): the
    first write creates the records of the whole container, the first task's record
    already RUNNING with its start's fields (the start folded into its record), and no
    separate start is written for it."""
    tm = TaskManager(backend=place.manager_url(), publish_events=False)

    @tm.task()
    async def job(i: int) -> int:
        return i

    async with tm:
        backend = tm._engine.backend
        creates: list[list[tuple[str, TaskStatus, str | None, int]]] = []
        changes: list[list[tuple[str, TaskStatus]]] = []
        create_many, transition_many = backend.create_many, backend.transition_many

        async def recorded_creates(records: Any) -> Any:
            creates.append([(r.task_id, r.status, r.owner, r.attempt) for r in records])
            return await create_many(records)

        async def recorded_changes(items: Any) -> Any:
            changes.append([(item.task_id, item.new) for item in items])
            return await transition_many(items)

        backend.create_many = recorded_creates  # type: ignore[method-assign]
        backend.transition_many = recorded_changes  # type: ignore[method-assign]
        container = ManagedBackgroundTasks(tm)
        ids = [container.add_task(job, i) for i in range(3)]
        await container()
        records = [await tm.store.aget(task_id) for task_id in ids]
        owner = tm._engine.instance_id
    assert [r.status if r else None for r in records] == [TaskStatus.SUCCESS] * 3
    assert creates, "the records were not written by one create"
    first = creates[0]
    assert [item[0] for item in first] == ids, creates
    assert first[0][1:] == (TaskStatus.RUNNING, owner, 1), "the first start was not folded"
    assert [item[1] for item in first[1:]] == [TaskStatus.PENDING] * 2
    starts = [task_id for batch in changes for task_id, new in batch if new is TaskStatus.RUNNING]
    assert ids[0] not in starts, "the folded start was written again"
    assert sorted(starts) == sorted(ids[1:]), changes
    assert records[0] is not None and records[0].started_at is not None


@pytest.mark.parametrize("reached_the_store", [False, True])
async def test_a_failed_write_of_a_record_and_its_start_still_runs_the_task_once(
    place: Any, reached_the_store: bool
) -> None:
    """The write holding a task's record and its start fails as unreachable — before
    the store saw it, or after it committed (the reply lost). The task still runs, once,
    and ends SUCCESS: the record is written before the start is tried again, and a
    start that had landed is recognised as ours."""
    tm, job, runs = _counting_manager(place)
    async with tm:
        backend = tm._engine.backend
        create_many = backend.create_many
        failures: list[int] = []

        async def flaky(records: Any) -> Any:
            if not failures:
                failures.append(len(records))
                assert records[0].status is TaskStatus.RUNNING, "the start was not folded"
                if reached_the_store:
                    await create_many(records)
                raise BackendUnavailableError("the connection dropped (test)")
            return await create_many(records)

        backend.create_many = flaky  # type: ignore[method-assign]
        container = ManagedBackgroundTasks(tm)
        task_id = container.add_task(job, 7)
        await container()
        record = await tm.store.aget(task_id)
    assert failures == [1], "the record and its start were not written together"
    assert runs == [7]
    assert record is not None and record.status is TaskStatus.SUCCESS and record.result == 7


async def test_a_start_folded_into_a_record_stored_by_a_lost_write_still_applies(
    place: Any,
) -> None:
    """A flush whose write committed but whose reply was lost leaves the record in the
    write buffer; the task's start then folds into that record's next create, which
    finds the id taken by its own earlier write. The start is applied to the stored
    record instead: the task runs once and ends SUCCESS."""
    tm, job, runs = _counting_manager(place)
    async with tm:
        backend = tm._engine.backend
        create_many = backend.create_many
        calls: list[list[TaskStatus]] = []

        async def lost_reply_once(records: Any) -> Any:
            calls.append([r.status for r in records])
            result = await create_many(records)
            if len(calls) == 1:
                raise BackendUnavailableError("the reply was lost (test)")
            return result

        backend.create_many = lost_reply_once  # type: ignore[method-assign]
        container = ManagedBackgroundTasks(tm)
        task_id = container.add_task(job, 5)
        with pytest.raises(BackendUnavailableError):
            await tm._engine.flush()
        assert task_id in tm._engine.pending, "a failed flush keeps the record buffered"
        await container()
        record = await tm.store.aget(task_id)
    assert calls[:2] == [[TaskStatus.PENDING], [TaskStatus.RUNNING]], calls
    assert runs == [5]
    assert record is not None and record.status is TaskStatus.SUCCESS and record.result == 5


async def test_one_write_in_flight_at_a_time(place: Any) -> None:
    """SQL backends take one group-commit write at a time (SQLite has a single writer;
    on PostgreSQL and MySQL a second one was slower): under requests in flight, the
    engine never has two of its writes on their way at once."""
    tm, job, runs = _counting_manager(place)
    async with tm:
        backend = tm._engine.backend
        assert backend.concurrent_writes == 1
        group = tm._engine._group_commit
        assert group is not None and group.writes_at_once == 1
        active, most = 0, 0
        for name in ("write_many", "create_many", "transition_many"):
            real = getattr(backend, name)

            def watched(real: Any) -> Any:
                async def call(*args: Any) -> Any:
                    nonlocal active, most
                    if asyncio.current_task() in inside:
                        return await real(*args)  # one write method calling another
                    inside.add(asyncio.current_task())
                    active += 1
                    most = max(most, active)
                    try:
                        return await real(*args)
                    finally:
                        active -= 1
                        inside.discard(asyncio.current_task())

                return call

            setattr(backend, name, watched(real))
        inside: set[asyncio.Task[Any] | None] = set()

        async def request(i: int) -> None:
            container = ManagedBackgroundTasks(tm)
            container.add_task(job, i)
            await container()

        async def lane(first: int) -> None:
            for i in range(first, 4 * WAVE, WAVE):
                await request(i)

        await asyncio.gather(*(lane(n) for n in range(WAVE)))
    assert sorted(runs) == list(range(4 * WAVE))
    assert most == 1, f"{most} writes in flight at once"
