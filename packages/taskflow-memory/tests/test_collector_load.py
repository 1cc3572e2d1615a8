"""What in-process tasks leave to Python's garbage collector.

Full collections walk every object that is tracked and alive, and each cycle left behind
is freed only by a collection: on the memory backend both were a large share of a task's
cost. These tests keep it that way: a finished task's record is one tracked object, its
log lines and arguments are plain tuples the collector untracks, and an attempt leaves
no reference cycle.
"""

from __future__ import annotations

import gc

import pytest

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager, TaskStatus, task_log
from fastapi_taskflow.models import LiveRecord

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_finished_tasks_lines_and_arguments_are_left_to_reference_counting() -> None:
    tm = TaskManager(publish_events=False)
    tries: list[int] = []

    @tm.task(retries=1, delay=0)
    async def flaky(n: int, label: str) -> None:
        task_log("working", level="info", step=n)
        tries.append(n)
        if len(tries) < 2:
            raise RuntimeError("not yet")

    async with tm:
        container = ManagedBackgroundTasks(tm)
        task_id = container.add_task(flaky, 1, "one")
        await container()
        record = await tm.store.aget(task_id)
        assert record is not None and record.status is TaskStatus.SUCCESS
        messages = [entry.message for entry in record.logs]
        assert messages[:2] == ["working", "attempt 1 failed: RuntimeError: not yet"]
        assert record.logs[0].extra == {"step": 1}
        assert record.args == [1, "one"]

        for _ in range(4):  # a tuple is untracked once its items are: one level a pass
            gc.collect()
        state = tm.backend._state  # type: ignore[attr-defined]
        kept = state.records[task_id]
        assert type(kept) is LiveRecord
        lines = state.logs[task_id]
        assert len(lines) == 4  # working, failed, retrying, working
        assert not any(gc.is_tracked(line) for line in lines)
        assert not gc.is_tracked(lines)
        assert not gc.is_tracked(kept.args)


async def test_attempts_leave_no_reference_cycles() -> None:
    tm = TaskManager(publish_events=False)
    count = 200

    @tm.task(retries=1, delay=0)
    async def fails_once(n: int, seen: set[int] = set()) -> None:  # noqa: B006
        if n not in seen:
            seen.add(n)
            raise ValueError("first try")

    async with tm:
        container = ManagedBackgroundTasks(tm)
        gc.collect()
        gc.disable()
        try:
            for n in range(count):
                container.add_task(fails_once, n)
            await container()
            left = gc.collect()  # objects found only through cycles
        finally:
            gc.enable()
        stats = await tm.store.astats()
    assert stats.by_status.get(TaskStatus.SUCCESS) == count
    assert left < count, f"{left} objects in cycles after {2 * count} attempts"
