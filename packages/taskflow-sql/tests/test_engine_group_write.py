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


async def test_a_task_started_before_any_flush_is_created_and_started_in_one_write(
    place: Any,
) -> None:
    """A container awaited without a flush first (no response carried the ids): the
    first task's record and its start go in one ``write_many``, records first; the
    records of the whole container are created by that write."""
    tm = TaskManager(backend=place.manager_url(), publish_events=False)

    @tm.task()
    async def job(i: int) -> int:
        return i

    async with tm:
        backend = tm._engine.backend
        writes: list[tuple[list[str], list[str]]] = []
        write_many = backend.write_many

        async def recorded(creates: Any, transitions: Any) -> Any:
            writes.append(([r.task_id for r in creates], [t.task_id for t in transitions]))
            return await write_many(creates, transitions)

        backend.write_many = recorded  # type: ignore[method-assign]
        container = ManagedBackgroundTasks(tm)
        ids = [container.add_task(job, i) for i in range(3)]
        await container()
        records = [await tm.store.aget(task_id) for task_id in ids]
    assert [r.status if r else None for r in records] == [TaskStatus.SUCCESS] * 3
    assert writes, "the records and the first start were not written together"
    created, started = writes[0]
    assert created == ids and started == [ids[0]], writes


@pytest.mark.parametrize("reached_the_store", [False, True])
async def test_a_failed_write_of_a_record_and_its_start_still_runs_the_task_once(
    place: Any, reached_the_store: bool
) -> None:
    """The write holding a task's record and its start fails as unreachable — before
    the store saw it, or after it committed (the reply lost). The task still runs, once,
    and ends SUCCESS: the record is written before the start is tried again, and a
    start that had landed is recognised as ours."""
    tm = TaskManager(backend=place.manager_url(), publish_events=False)
    runs: list[int] = []

    @tm.task()
    async def job(i: int) -> int:
        runs.append(i)
        return i

    async with tm:
        backend = tm._engine.backend
        write_many = backend.write_many
        failures: list[int] = []

        async def flaky(creates: Any, transitions: Any) -> Any:
            if not failures:
                failures.append(len(creates))
                if reached_the_store:
                    await write_many(creates, transitions)
                raise BackendUnavailableError("the connection dropped (test)")
            return await write_many(creates, transitions)

        backend.write_many = flaky  # type: ignore[method-assign]
        container = ManagedBackgroundTasks(tm)
        task_id = container.add_task(job, 7)
        await container()
        record = await tm.store.aget(task_id)
    assert failures == [1], "the record and its start were not written together"
    assert runs == [7]
    assert record is not None and record.status is TaskStatus.SUCCESS and record.result == 7
