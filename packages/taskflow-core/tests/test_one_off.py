"""One-off schedules on the memory backend: run at their time, moved by run_key,
cancelled, listed, exactly once across managers sharing a backend, bad input."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from fastapi_taskflow import ScheduleError, TaskManager, TaskStatus, get_task_context
from taskflow_memory import MemoryBackend

pytestmark = pytest.mark.anyio

UTC = timezone.utc


async def test_a_firing_runs_once_at_its_time(eventually: Any) -> None:
    tm = TaskManager(poll_interval=0.02)
    ran: list[datetime] = []

    @tm.task()
    async def remind(user: str) -> str:
        ran.append(datetime.now(UTC))
        return f"reminded {user}"

    async with tm:
        run_at = datetime.now(UTC) + timedelta(seconds=0.3)
        task_id = await tm.schedule_once(remind, "ada", run_at=run_at)
        record = await tm.store.aget(task_id)
        assert record is not None and record.status is TaskStatus.PENDING
        await eventually(lambda: tm.store.get(task_id).status is TaskStatus.SUCCESS)  # type: ignore[union-attr]
    record = tm.store.get(task_id)
    assert record is not None and record.result == "reminded ada"
    assert len(ran) == 1 and ran[0] >= run_at
    assert record.started_at is not None and record.started_at >= run_at


async def test_the_same_run_key_moves_the_firing(eventually: Any) -> None:
    tm = TaskManager(poll_interval=0.02)
    ran: list[tuple[str, datetime]] = []

    @tm.task()
    async def remind(note: str) -> None:
        ran.append((note, datetime.now(UTC)))

    async with tm:
        first = await tm.schedule_once(remind, "early", delay=0.3, run_key="reminder:1")
        moved_to = datetime.now(UTC) + timedelta(seconds=0.8)
        second = await tm.schedule_once(remind, "late", run_at=moved_to, run_key="reminder:1")
        assert second != first
        listed = await tm.list_scheduled()
        assert [(s.task_id, s.run_key) for s in listed] == [(second, "reminder:1")]
        assert listed[0].run_at == moved_to
        await eventually(lambda: ran, timeout=5)
        await eventually(lambda: tm.store.get(second).status is TaskStatus.SUCCESS)  # type: ignore[union-attr]
    assert [note for note, _ in ran] == ["late"]
    assert ran[0][1] >= moved_to
    old = tm.store.get(first)
    assert old is not None and old.status is TaskStatus.CANCELLED


async def test_a_cancelled_firing_never_runs(eventually: Any) -> None:
    tm = TaskManager(poll_interval=0.02)
    ran: list[str] = []

    @tm.task()
    async def remind(note: str) -> None:
        ran.append(note)

    async with tm:
        cancelled = await tm.schedule_once(remind, "no", delay=0.2, run_key="k")
        kept = await tm.schedule_once(remind, "yes", delay=0.4)
        assert await tm.cancel_scheduled("k") is True
        assert await tm.cancel_scheduled("k") is False
        assert await tm.cancel_scheduled("never-scheduled") is False
        await eventually(lambda: tm.store.get(kept).status is TaskStatus.SUCCESS)  # type: ignore[union-attr]
        assert await tm.list_scheduled() == []
    assert ran == ["yes"]
    record = tm.store.get(cancelled)
    assert record is not None and record.status is TaskStatus.CANCELLED


async def test_list_scheduled_is_soonest_first_with_user_tags() -> None:
    tm = TaskManager()

    @tm.task()
    def job(n: int) -> None: ...

    async with tm:
        late = await tm.schedule_once(job, 1, delay=3600, tags={"team": "a"})
        soon = await tm.schedule_once(job, 2, delay=60, run_key="soon")
        listed = await tm.list_scheduled()
        assert [s.task_id for s in listed] == [soon, late]
        assert listed[1].tags == {"team": "a"} and listed[1].run_key is None
        assert listed[0].func_name.endswith("job")
        record = await tm.store.aget(late)
        assert record is not None and record.tags["team"] == "a"
        await tm.cancel_scheduled("soon")


async def test_on_memory_the_task_gets_the_very_objects(eventually: Any) -> None:
    tm = TaskManager(poll_interval=0.02)
    seen: list[object] = []
    thing = object()  # not JSON-encodable: fine in process

    @tm.task()
    async def keep(value: object) -> None:
        seen.append(value)

    async with tm:
        task_id = await tm.schedule_once(keep, thing, delay=0)
        await eventually(lambda: tm.store.get(task_id).status is TaskStatus.SUCCESS)  # type: ignore[union-attr]
    assert seen == [thing] and seen[0] is thing


async def test_firings_run_exactly_once_across_managers_on_one_backend(eventually: Any) -> None:
    backend = MemoryBackend()
    managers = [
        TaskManager(backend=b, poll_interval=0.01, instance_id=f"i{n}")
        for n, b in enumerate([backend, backend.fork(), backend.fork()])
    ]
    runs: Counter[str] = Counter()
    funcs = []
    for tm in managers:

        @tm.task(name="count")
        async def count(label: str) -> None:
            runs[label] += 1
            await asyncio.sleep(0)

        funcs.append(count)

    for tm in managers:
        await tm.startup()
    try:
        ids = [
            await managers[n % 3].schedule_once(funcs[n % 3], f"l{n}", delay=0.05 * (n % 7))
            for n in range(100)
        ]
        # Every record ends SUCCESS (a run is counted a moment before its record is
        # written, so this waits for the writes): no claim can start one again; the
        # shutdowns below wait for whatever still runs before the runs are counted.
        store = managers[0].store

        def all_succeeded() -> bool:
            records = [store.get(task_id) for task_id in ids]
            return all(r is not None and r.status is TaskStatus.SUCCESS for r in records)

        await eventually(all_succeeded, timeout=10)
    finally:
        for tm in managers:
            await tm.shutdown()
    assert len(runs) == 100 and set(runs.values()) == {1}


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({}, "exactly one of run_at"),
        ({"delay": 1, "run_at": datetime.now(UTC)}, "exactly one of run_at"),
        ({"run_at": datetime(2030, 1, 1)}, "no time zone"),
        ({"run_at": "2030-01-01"}, "must be a datetime"),
        ({"delay": -1}, ">= 0"),
        ({"delay": 1, "run_key": ""}, "run_key"),
        # a bare ValueError / OverflowError before
        ({"delay": float("nan")}, r"delay must be a timedelta \(or seconds\) >= 0, got nan"),
        ({"delay": float("inf")}, r">= 0, got inf"),
        ({"delay": 1e20}, r">= 0, got 1e\+20"),
        ({"delay": timedelta(days=999_999_999)}, "past the last date a datetime holds"),
    ],
)
async def test_bad_one_off_settings_are_refused(kwargs: dict[str, Any], fragment: str) -> None:
    tm = TaskManager()

    @tm.task()
    def job() -> None: ...

    async with tm:
        with pytest.raises(ScheduleError, match=fragment):
            await tm.schedule_once(job, **kwargs)
        assert await tm.list_scheduled() == []


async def test_task_context_of_a_firing_carries_its_schedule_tags(eventually: Any) -> None:
    tm = TaskManager(poll_interval=0.02)
    tags: list[dict[str, str]] = []

    @tm.task()
    async def job() -> None:
        ctx = get_task_context()
        assert ctx is not None
        tags.append(ctx.tags)

    async with tm:
        await tm.schedule_once(job, delay=0, run_key="r", tags={"team": "a"})
        await eventually(lambda: tags)
    assert tags[0]["team"] == "a" and tags[0]["taskflow.run_key"] == "r"


def _taskflow_tasks() -> list[str]:
    """The names of taskflow's asyncio tasks still alive on this loop."""
    return sorted(
        name
        for task in asyncio.all_tasks()
        if not task.done() and (name := task.get_name()).startswith("taskflow-")
    )


async def test_a_firing_armed_after_shutdown_waits_for_the_next_startup(
    eventually: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """After shutdown, schedule_once() stores the firing and starts nothing: no queue
    worker runs it (or outlives the manager's next shutdown, failing every 0.1 s)."""
    tm = TaskManager(poll_interval=0.05)
    ran: list[str] = []

    @tm.task()
    async def remind(user: str) -> None:
        ran.append(user)

    async with tm:
        pass
    task_id = await tm.schedule_once(remind, "ada", delay=0)
    assert _taskflow_tasks() == []  # nothing would stop one
    record = await tm.store.aget(task_id)
    assert record is not None and record.status is TaskStatus.PENDING
    async with tm:
        await eventually(lambda: tm.store.get(task_id).status is TaskStatus.SUCCESS)  # type: ignore[union-attr]
    assert ran == ["ada"]
    assert _taskflow_tasks() == []
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


@pytest.mark.parametrize(
    "run_at",
    [
        # aware dates whose UTC form is past year 9999 or before year 1
        datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),
        datetime(1, 1, 1, 5, tzinfo=timezone(timedelta(hours=9))),
    ],
)
async def test_a_run_at_outside_the_datetime_range_in_utc_is_refused(run_at: datetime) -> None:
    """It raised a bare OverflowError (converting it to UTC), not a ScheduleError."""
    tm = TaskManager()

    @tm.task()
    def job() -> None: ...

    async with tm:
        with pytest.raises(ScheduleError, match="outside the range a datetime holds"):
            await tm.schedule_once(job, run_at=run_at)
        assert await tm.list_scheduled() == []
