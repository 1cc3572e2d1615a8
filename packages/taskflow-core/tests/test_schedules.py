"""Periodic schedules on the memory backend: ticks, exactly once per tick across
managers sharing one backend, retries of a firing, cron and time zones, bad settings."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest

from fastapi_taskflow import (
    InvalidTaskError,
    ScheduleError,
    TaskManager,
    TaskStatus,
    get_task_context,
)
from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.schedules import EVERY_MIN, SCHEDULE_TAG, TICK_TAG, Schedule
from taskflow_memory import MemoryBackend

pytestmark = pytest.mark.anyio

UTC = timezone.utc


def _ticks(tm: TaskManager, name: str) -> list[Any]:
    page = tm.store.query(tags={SCHEDULE_TAG: name}, limit=1000)
    return page.items


def _in_own_loop(scenario: Callable[[], Coroutine[Any, Any, None]], timeout: float = 10.0) -> None:
    """Run ``scenario`` on an event loop of its own, in a thread, and fail if it has not
    returned within ``timeout`` seconds: a loop blocked for ever (a timer that never
    yields) fails the test instead of hanging the run. (The blocked thread is a daemon.)"""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(scenario())
        except BaseException as exc:  # handed to the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="schedule-scenario", daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"the event loop was blocked for {timeout}s"
    if errors:
        raise errors[0]


async def test_an_interval_schedule_fires_each_tick_as_a_task(eventually: Any) -> None:
    tm = TaskManager(poll_interval=0.02)
    runs: list[str] = []

    @tm.schedule(every=timedelta(seconds=0.2), name="tick")
    async def tick() -> str:
        ctx = get_task_context()
        assert ctx is not None
        runs.append(ctx.tags[TICK_TAG])
        return "ok"

    async with tm:
        await eventually(lambda: len(runs) >= 3, timeout=5)
    ticks = sorted(datetime.fromisoformat(t) for t in runs)
    # whole multiples of the interval since the epoch, one firing per tick
    assert len(set(ticks)) == len(ticks)
    for t in ticks:
        assert ((t - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(seconds=0.2)) % 1 == 0
    records = _ticks(tm, "tick")
    assert {r.func_name for r in records} == {"tick"}
    assert all(
        r.status in (TaskStatus.SUCCESS, TaskStatus.PENDING, TaskStatus.RUNNING) for r in records
    )
    assert any(r.status is TaskStatus.SUCCESS and r.result == "ok" for r in records)


async def test_three_managers_on_one_backend_fire_each_tick_once(eventually: Any) -> None:
    backend = MemoryBackend()
    managers = [
        TaskManager(backend=b, poll_interval=0.02, instance_id=f"i{n}")
        for n, b in enumerate([backend, backend.fork(), backend.fork()])
    ]
    runs: Counter[str] = Counter()
    where: list[str] = []
    for n, tm in enumerate(managers):

        @tm.schedule(every=timedelta(seconds=0.1), name="every_instance")
        async def every_instance(n: int = n) -> None:
            ctx = get_task_context()
            assert ctx is not None
            runs[ctx.tags[TICK_TAG]] += 1
            where.append(f"i{n}")

    for tm in managers:
        await tm.startup()
    try:
        await eventually(lambda: len(runs) >= 10, timeout=10)
    finally:
        for tm in managers:
            await tm.shutdown()
    assert max(runs.values()) == 1, runs
    records = _ticks(managers[0], "every_instance")
    assert Counter(r.tags[TICK_TAG] for r in records).most_common(1)[0][1] == 1


async def test_a_failing_firing_is_retried(eventually: Any) -> None:
    tm = TaskManager(poll_interval=0.02)
    attempts: Counter[str] = Counter()

    @tm.schedule(every=timedelta(seconds=0.2), retries=1, name="flaky")
    def flaky() -> None:
        ctx = get_task_context()
        assert ctx is not None
        attempts[ctx.task_id] += 1
        if attempts[ctx.task_id] == 1:
            raise RuntimeError("first attempt fails")

    async with tm:

        def retried() -> bool:
            return any(
                r.status is TaskStatus.SUCCESS and r.attempt == 2 for r in _ticks(tm, "flaky")
            )

        await eventually(retried, timeout=5)


async def test_a_firing_is_retried_as_the_schedule_s_retry_settings_say(eventually: Any) -> None:
    """``schedule()`` takes every retry setting ``task()`` takes: ``retry_on`` (a failure
    it does not name is not retried), ``max_delay`` and ``jitter``."""
    tm = TaskManager(poll_interval=0.02)

    @tm.schedule(
        every=timedelta(seconds=0.2),
        retries=3,
        delay=1,
        backoff=4,
        max_delay=2,
        jitter=0.5,
        retry_on=ConnectionError,
        name="picky",
    )
    def picky() -> None:
        raise ValueError("bad data: retrying will not help")

    entry = tm.registry.by_name("picky")
    assert entry is not None
    assert entry.config.retry_on == (ConnectionError,)
    assert all(1 <= entry.config.retry_delay(3) <= 2 for _ in range(50))
    async with tm:

        def failed_once() -> bool:
            return any(r.status is TaskStatus.FAILED for r in _ticks(tm, "picky"))

        await eventually(failed_once, timeout=5)
        failed = [r for r in _ticks(tm, "picky") if r.status is TaskStatus.FAILED]
        assert failed[0].attempt == 1


async def test_a_firing_interrupted_by_a_shutdown_runs_again_with_requeue_on_interrupt(
    tmp_path: Any, eventually: Any
) -> None:
    """A nightly job cut short by a deploy runs again on the next instance, instead of
    ending INTERRUPTED (its tick would be lost: a tick passes only once)."""
    url = f"sqlite:///{tmp_path}/tasks.db"
    starts: list[tuple[str, int]] = []
    blocking = [True]

    def instance(name: str) -> TaskManager:
        tm = TaskManager(url, poll_interval=0.02, shutdown_timeout=0.2, instance_id=name)

        @tm.schedule(
            every=timedelta(hours=1), run_on_startup=True, requeue_on_interrupt=True, name="nightly"
        )
        async def nightly() -> None:
            ctx = get_task_context()
            assert ctx is not None
            starts.append((name, ctx.attempt))
            if blocking[0]:
                await anyio.sleep(3600)

        return tm

    async with instance("a"):
        await eventually(lambda: starts == [("a", 1)], timeout=10)
    assert starts == [("a", 1)]  # not claimed again by the instance shutting down
    blocking[0] = False
    second = instance("b")
    async with second:

        def done() -> bool:
            return any(r.status is TaskStatus.SUCCESS for r in _ticks(second, "nightly"))

        await eventually(done, timeout=10)
        assert len(_ticks(second, "nightly")) == 1  # the same firing, not a new tick
    assert starts == [("a", 1), ("b", 2)]


@pytest.mark.parametrize("overlap", [True, False])
async def test_overlap_false_skips_ticks_while_a_firing_is_unfinished(
    overlap: bool, eventually: Any
) -> None:
    """A job slower than its interval: by default each tick fires (firings overlap);
    with ``overlap=False`` a tick is skipped while a firing is PENDING or RUNNING, on
    any of the managers sharing the store, so one runs at a time."""
    backend = MemoryBackend()
    managers = [TaskManager(backend=b, poll_interval=0.02) for b in (backend, backend.fork())]
    running = 0
    peak = 0
    ends: list[str] = []
    for tm in managers:

        @tm.schedule(every=timedelta(seconds=0.1), overlap=overlap, name="slow")
        async def slow() -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await anyio.sleep(0.35)
            running -= 1
            ends.append("end")

    for tm in managers:
        await tm.startup()
    try:
        await eventually(lambda: len(ends) >= 3, timeout=10)
    finally:
        for tm in managers:
            await tm.shutdown()
    if overlap:
        assert peak >= 3  # 0.35 s jobs every 0.1 s
    else:
        assert peak == 1
        records = _ticks(managers[0], "slow")
        # never two unfinished firings at once: the skipped ticks left no record
        assert sum(r.status is not TaskStatus.SUCCESS for r in records) <= 1, records


async def test_run_on_startup_fires_the_latest_tick_once(eventually: Any) -> None:
    backend = MemoryBackend()
    runs: list[str] = []
    managers = [TaskManager(backend=b) for b in (backend, backend.fork())]
    for tm in managers:

        @tm.schedule(every=timedelta(hours=1), run_on_startup=True, name="hourly")
        async def hourly() -> None:
            ctx = get_task_context()
            assert ctx is not None
            runs.append(ctx.tags[TICK_TAG])

    for tm in managers:
        await tm.startup()
    try:
        await eventually(lambda: runs, timeout=5)
        records = _ticks(managers[0], "hourly")
        assert len(records) == 1
        await eventually(lambda: managers[0].store.get(records[0].task_id).status.is_terminal)  # type: ignore[union-attr]
    finally:
        for tm in managers:
            await tm.shutdown()
    now = datetime.now(UTC)
    expected = now.replace(minute=0, second=0, microsecond=0)
    assert runs == [expected.isoformat()] or runs == [(expected - timedelta(hours=1)).isoformat()]


def test_cron_ticks_in_their_time_zone_across_daylight_saving() -> None:
    plan = Schedule.build(
        "nightly", every=None, cron="0 2 * * *", timezone="Europe/Paris", run_on_startup=False
    )
    paris = ZoneInfo("Europe/Paris")
    start = datetime(2026, 3, 27, 12, tzinfo=paris)
    ticks = []
    moment = start.astimezone(UTC)
    for _ in range(3):
        moment = plan.next_after(moment)
        ticks.append(moment.astimezone(paris))
    # 02:00 does not exist on 29 March 2026 (clocks jump to 03:00): cronsim fires at 03:00
    assert [t.isoformat() for t in ticks] == [
        "2026-03-28T02:00:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:00:00+02:00",
    ]
    assert plan.latest_at_or_before(ticks[1].astimezone(UTC)) == ticks[1]
    # 02:00-03:00 happens twice on 25 October 2026: the job fires once, at the first
    moment = datetime(2026, 10, 24, 12, tzinfo=UTC)
    autumn = []
    for _ in range(2):
        moment = plan.next_after(moment)
        autumn.append(moment.astimezone(paris).isoformat())
    assert autumn == ["2026-10-25T02:00:00+02:00", "2026-10-26T02:00:00+01:00"]


@pytest.mark.parametrize(
    ("cron", "zone", "fall_back", "ticks"),
    [
        # Paris: 03:00 CEST -> 02:00 CET at 01:00 UTC on 27 October 2024
        ("30 2 * * *", "Europe/Paris", datetime(2024, 10, 27, 1, tzinfo=UTC), ["00:30", "01:30"]),
        ("0-59 2 * * *", "Europe/Paris", datetime(2024, 10, 27, 1, tzinfo=UTC), None),
        # New York: 02:00 EDT -> 01:00 EST at 06:00 UTC on 3 November 2024
        ("0,30 1 * * *", "America/New_York", datetime(2024, 11, 3, 6, tzinfo=UTC), None),
    ],
)
def test_a_cron_tick_after_a_moment_in_a_repeated_hour_is_later_than_it(
    cron: str, zone: str, fall_back: datetime, ticks: list[str] | None
) -> None:
    """From any moment of the night the clocks go back, the next tick is strictly
    later and the latest is not (cronsim starts with the first pass of the repeated
    hour: from its second pass those times were past, and the timer fired one again)."""
    plan = Schedule.build("n", every=None, cron=cron, timezone=zone, run_on_startup=False)
    for minutes in range(-90, 150):
        moment = fall_back + timedelta(minutes=minutes, seconds=7)
        after, latest = plan.next_after(moment), plan.latest_at_or_before(moment)
        assert latest <= moment < after, (moment, latest, after)
        assert plan.next_after(latest) == after, moment  # nothing between them
    if ticks is not None:  # fires once that night, the next at the same time
        moment = fall_back - timedelta(hours=3)
        fired = []
        for _ in range(len(ticks)):
            moment = plan.next_after(moment)
            fired.append(moment.strftime("%H:%M"))
        assert fired == ticks


def test_a_cron_schedule_started_in_the_repeated_hour_waits_for_the_next_day(
    eventually: Any,
) -> None:
    """An instance that starts at 02:10 CET, the second pass of Paris's repeated hour,
    40 minutes after the 02:30 CEST tick: it does not fire that past tick (it fired it
    and then spun, blocking the loop on the memory backend); its first firing is 02:30
    CET the next day, when the clock gets there."""
    clock = ManualClock(datetime(2024, 10, 27, 1, 10, tzinfo=UTC))

    async def scenario() -> None:
        tm = TaskManager(clock=clock, poll_interval=0.02)

        @tm.schedule(cron="30 2 * * *", timezone="Europe/Paris", name="nightly")
        def nightly() -> None: ...

        async with tm:
            # Timers are spawned at startup: their first step (reading the clock, at
            # 02:10 CET) runs as soon as this coroutine lets the loop run.
            await asyncio.sleep(0.05)
            clock.advance(hours=24, minutes=19)  # 2024-10-28 01:29 UTC: not yet
            await asyncio.sleep(0.2)  # ten of the timer's readings of the clock
            assert _ticks(tm, "nightly") == []
            clock.advance(minutes=1)
            await eventually(lambda: _ticks(tm, "nightly"))
            (first,) = _ticks(tm, "nightly")
            assert datetime.fromisoformat(first.tags[TICK_TAG]) == datetime(
                2024, 10, 28, 1, 30, tzinfo=UTC
            )

    _in_own_loop(scenario)


def test_a_schedule_follows_a_manual_clock(eventually: Any) -> None:
    """Under a ManualClock (tests) a schedule fires when the clock is advanced past its
    tick, not after that many real seconds."""
    clock = ManualClock(datetime(2030, 1, 1, tzinfo=UTC))

    async def scenario() -> None:
        tm = TaskManager(clock=clock, poll_interval=0.02)

        @tm.schedule(every=timedelta(hours=1), name="hourly")
        def hourly() -> None: ...

        @tm.schedule(cron="0 9 * * 1", name="weekly")  # Mondays 09:00 UTC
        def weekly() -> None: ...

        async with tm:
            await asyncio.sleep(0.05)  # the timers' first step, as above
            clock.advance(hours=1)
            await eventually(lambda: len(_ticks(tm, "hourly")) == 1)
            clock.advance(days=7)  # 2030-01-01 is a Tuesday: one Monday 09:00 passed
            await eventually(lambda: _ticks(tm, "weekly"))
            (weekly_tick,) = _ticks(tm, "weekly")
            assert weekly_tick.tags[TICK_TAG].startswith("2030-01-07T09:00")

            def stamps() -> list[str]:
                return sorted(t.tags[TICK_TAG] for t in _ticks(tm, "hourly"))

            async def fired_on_the_8th() -> bool:
                if stamps()[-1] >= "2030-01-08":
                    return True
                clock.advance(hours=1)
                await asyncio.sleep(0.05)
                return False

            await eventually(fired_on_the_8th)
            # The week's missed ticks were skipped, not replayed (at most the one due
            # when the clock jumped fired late).
            assert all(s < "2030-01-01T03" or s >= "2030-01-08" for s in stamps()), stamps()
            assert len(stamps()) <= 4, stamps()

    _in_own_loop(scenario)


def test_the_timer_lets_the_loop_run_when_the_next_tick_is_due_at_once(
    eventually: Any,
) -> None:
    """A firing that takes longer than the interval (here: a clock an hour ahead at each
    reading, with an hourly schedule): every next tick is due at once. The timer fires
    it and still lets the loop run (on the memory backend nothing else awaited)."""

    class RacingClock:
        def __init__(self) -> None:
            self.current = datetime(2030, 1, 1, tzinfo=UTC)

        def now(self) -> datetime:
            self.current += timedelta(hours=1)
            return self.current

    async def scenario() -> None:
        tm = TaskManager(clock=RacingClock(), poll_interval=0.02)

        @tm.schedule(every=timedelta(hours=1), name="hourly")
        def hourly() -> None: ...

        async with tm:
            # polling needs the loop to run between the timer's firings
            await eventually(lambda: len(_ticks(tm, "hourly")) >= 5)

    _in_own_loop(scenario)


def test_the_shortest_and_the_longest_intervals_are_taken() -> None:
    """1 ms (``EVERY_MIN``) is the shortest interval; a very long one is taken as long
    as its next tick is a date a datetime holds."""
    for every in (EVERY_MIN, 0.001, timedelta(days=365 * 1000)):
        plan = Schedule.build("i", every=every, cron=None, timezone=None, run_on_startup=False)
        moment = datetime(2026, 1, 1, tzinfo=UTC)
        assert plan.latest_at_or_before(moment) <= moment < plan.next_after(moment)


def test_interval_ticks_are_absolute() -> None:
    plan = Schedule.build(
        "i", every=timedelta(minutes=15), cron=None, timezone=None, run_on_startup=False
    )
    moment = datetime(2026, 1, 1, 10, 7, 3, tzinfo=UTC)
    assert plan.next_after(moment) == datetime(2026, 1, 1, 10, 15, tzinfo=UTC)
    assert plan.next_after(datetime(2026, 1, 1, 10, 15, tzinfo=UTC)) == datetime(
        2026, 1, 1, 10, 30, tzinfo=UTC
    )
    assert plan.latest_at_or_before(moment) == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({}, "exactly one of every"),
        ({"every": 1, "cron": "* * * * *"}, "exactly one of every"),
        ({"every": timedelta(0)}, "positive timedelta"),
        ({"every": "1s"}, "positive timedelta"),
        ({"every": float("nan")}, r"positive timedelta \(or seconds\), got nan"),  # ValueError
        ({"every": float("inf")}, r"got inf"),  # OverflowError before
        ({"every": timedelta(microseconds=1)}, "shorter than 1 ms"),  # blocked the loop
        ({"every": EVERY_MIN / 2}, "shorter than 1 ms"),
        # accepted, then the timer died at startup (OverflowError: past year 9999)
        ({"every": 1e12}, "too long: its ticks fall past the last date"),
        ({"every": timedelta(days=4_000_000)}, "too long"),
        ({"every": timedelta.max}, "too long"),
        # read as "second minute hour ...": '* * * * * *' fired every second
        ({"cron": "* * * * * *"}, r"it has 6 fields; use 5 fields 'minute hour"),
        ({"cron": "0 2 * * * 2030"}, "it has 6 fields"),
        ({"cron": "0 2 * *"}, "it has 4 fields"),
        ({"cron": "@daily"}, "it has 1 field .aliases such as '@daily' are not read"),
        ({"cron": ""}, "it has 0 fields"),
        ({"cron": "61 * * * *"}, "invalid cron expression"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"every": 1, "run_on_startup": "yes"}, "run_on_startup"),
        ({"every": 1, "overlap": "no"}, "overlap"),
    ],
)
def test_bad_schedule_settings_fail_at_decoration(kwargs: dict[str, Any], fragment: str) -> None:
    tm = TaskManager()
    with pytest.raises(ScheduleError, match=fragment):
        tm.schedule(**kwargs)


def test_a_scheduled_function_that_needs_arguments_is_refused_at_decoration() -> None:
    """A firing calls the function with none: it failed at every tick (TypeError)."""
    tm = TaskManager()

    async def report(day: str, *, to: str, cc: str = "") -> None: ...

    with pytest.raises(ScheduleError, match="with no arguments, but it needs day, to"):
        tm.schedule(every=60)(report)
    assert tm.registry.names() == []  # nothing was registered

    @tm.schedule(every=60)
    async def daily(day: str = "today", *more: str, **options: str) -> None: ...

    assert tm.registry.names() == [f"{__name__}.{daily.__qualname__}"]


def test_two_schedules_with_one_name_are_refused() -> None:
    tm = TaskManager()

    @tm.schedule(every=60, name="same")
    def first() -> None: ...

    with pytest.raises(InvalidTaskError, match="two task functions"):

        @tm.schedule(every=60, name="same")
        def second() -> None: ...
