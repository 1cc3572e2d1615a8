"""DeathWatch: an instance is dead only on evidence the observer gathered itself."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from fastapi_taskflow import TaskManager
from fastapi_taskflow.liveness import DeathWatch, beat_interval

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def beat(n: int) -> datetime:
    return T0 + timedelta(seconds=n)


def watch(clock: Monotonic, period: float = 5.0) -> DeathWatch:
    return DeathWatch("me", period, monotonic=clock)


def run(w: DeathWatch, clock: Monotonic, seconds: float, beats: dict[str, datetime]) -> list[str]:
    """Read every 1 s for ``seconds`` with unchanging ``beats``; the last read's verdict."""
    dead: list[str] = []
    for _ in range(int(seconds)):
        clock.now += 1.0
        dead = w.observe(beats, set())
    return dead


def test_a_heartbeat_unchanged_for_the_period_is_dead_and_a_changing_one_is_not() -> None:
    clock = Monotonic()
    w = watch(clock)
    assert w.observe({"a": beat(0), "b": beat(0), "me": beat(0)}, {"me"}) == []
    for n in range(1, 5):
        clock.now += 1.0
        assert w.observe({"a": beat(0), "b": beat(n), "me": beat(0)}, set()) == []
    clock.now += 1.0
    assert w.observe({"a": beat(0), "b": beat(5), "me": beat(0)}, set()) == ["a"]


def test_an_owner_without_a_heartbeat_is_dead_after_the_period() -> None:
    clock = Monotonic()
    w = watch(clock)
    assert w.observe({}, {"operator@host"}) == []
    for _ in range(4):
        clock.now += 1.0
        assert w.observe({}, {"operator@host"}) == []
    clock.now += 1.0
    assert w.observe({}, {"operator@host"}) == ["operator@host"]


def test_a_gap_between_reads_restarts_the_watch() -> None:
    clock = Monotonic()
    w = watch(clock)
    w.observe({"a": beat(0)}, set())
    clock.now += 4.0
    w.observe({"a": beat(0)}, set())
    clock.now += 3.0  # this instance stalled for longer than half the period
    assert w.observe({"a": beat(0)}, set()) == []
    assert run(w, clock, 9, {"a": beat(0)}) == []  # two periods of new evidence needed
    assert run(w, clock, 1, {"a": beat(0)}) == ["a"]


def test_after_losing_the_store_nobody_is_dead_for_two_periods() -> None:
    """The outage case: the heartbeats could not change while the store was down, and
    another instance may reconnect a little later than this one."""
    clock = Monotonic()
    w = watch(clock)
    assert run(w, clock, 4, {"a": beat(0)}) == []
    w.lost_contact()
    clock.now += 15.0  # three periods without the store
    assert w.observe({"a": beat(0)}, set()) == []
    assert run(w, clock, 9, {"a": beat(0)}) == []
    assert run(w, clock, 1, {"a": beat(0)}) == ["a"]


def test_a_late_renewal_after_the_store_returns_keeps_an_instance_alive() -> None:
    clock = Monotonic()
    w = watch(clock)
    w.observe({"a": beat(0)}, set())
    w.lost_contact()
    clock.now += 15.0
    w.observe({"a": beat(0)}, set())
    assert run(w, clock, 7, {"a": beat(0)}) == []  # reconnecting slowly, for 7 s
    assert run(w, clock, 4, {"a": beat(99)}) == []  # then beats: alive, never adopted


def test_the_observer_never_declares_itself_dead_and_forgets_the_gone() -> None:
    clock = Monotonic()
    w = watch(clock)
    assert run(w, clock, 20, {"me": beat(0)}) == []
    w.observe({"a": beat(0)}, set())
    clock.now += 1.0
    w.observe({}, set())  # a's heartbeat deleted and nothing owned: no longer watched
    assert run(w, clock, 10, {}) == []


def test_beats_come_five_times_per_period() -> None:
    assert beat_interval(5.0) == 1.0
    assert beat_interval(0.01) == 0.02


@pytest.mark.anyio
async def test_a_running_instance_renews_its_heartbeat(tmp_path: Path) -> None:
    """The heartbeat is written, and written again, on every Python the packages take
    (on 3.10 a Python 3.11 API made every beat fail quietly: the instance looked dead
    to the others from its start)."""
    tm = TaskManager(backend=f"sqlite:///{tmp_path / 'tasks.db'}", liveness_seconds=0.5)
    seen: set[datetime] = set()
    async with tm:
        backend = await tm.opened_backend()
        deadline = time.monotonic() + 10
        while len(seen) < 2:
            assert time.monotonic() < deadline, f"heartbeats seen in 10 s: {seen}"
            beat = (await backend.heartbeats()).get(tm.instance_id)
            if beat is not None:
                seen.add(beat)
            await asyncio.sleep(0.02)
