"""Schedules, timeouts and cancellation across 3 real instances on each shared backend
(Redis, PostgreSQL, SQLite file, MySQL/MariaDB).

``schedules_app`` runs in 3 uvicorn processes sharing one isolated backend:

* an ``every=1 s`` schedule fires 10 ± 1 times over 10 s in total (not per instance),
  and no tick runs twice; with ``overlap=False`` and 2.5 s firings, one runs at a time
  across the instances;
* 100 ``schedule_once`` firings armed through all 3 instances each run exactly once; a
  moved firing runs only at its new time; a cancelled one never runs;
* firings armed by an instance that is then SIGKILLed still run, once, on another;
* a hanging async task with ``timeout=1`` is FAILED within 2 s of starting;
* a task running on A, cancelled from B, ends CANCELLED and does not run on.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import instances  # tests-integration/ is on sys.path (pytest's pythonpath option)
import pytest

durable_backend = instances.durable_backend
Backend = instances.Backend
Instance = instances.Instance

APP = "schedules_app:app"
SHARED = pytest.mark.parametrize(
    "durable_backend", ["redis", "postgres", "sqlite", "mysql"], indirect=True
)


def _lines(backend: Backend) -> list[tuple[str, str, str, float]]:
    """The run log as ``(event, label, instance, unix time)``."""
    if not backend.run_log.exists():
        return []
    out = []
    for line in backend.run_log.read_text().splitlines():
        if line:
            event, label, instance, at = line.split(" ")
            out.append((event, label, instance, float(at)))
    return out


def _ran(backend: Backend) -> Counter[str]:
    return Counter(label for event, label, _, _ in _lines(backend) if event == "ran")


def _post(instance: Instance, path: str, body: Any = None) -> Any:
    with instance.client() as client:
        response = client.post(path, json=body)
        response.raise_for_status()
        return response.json()


def _status(instance: Instance, task_id: str) -> dict[str, Any]:
    with instance.client() as client:
        response = client.get(f"/status/{task_id}")
        response.raise_for_status()
        found: dict[str, Any] = response.json()
        return found


def _stop(fleet: list[Instance]) -> None:
    for instance in fleet:
        instance.stop()


@SHARED
def test_an_every_second_schedule_fires_once_per_tick_in_total(durable_backend: Backend) -> None:
    fleet = instances.start(durable_backend, "A", "B", "C", app=APP, SCHEDULES_PERIODIC="1")
    try:
        first = instances.poll(
            lambda: [lab for ev, lab, _, _ in _lines(durable_backend) if ev == "tick"],
            30,
            "the first tick",
        )
        start = datetime.fromisoformat(min(first)) + timedelta(seconds=1)
        end = start + timedelta(seconds=10)

        def window_done() -> bool:
            ticks = [
                datetime.fromisoformat(lab)
                for ev, lab, _, _ in _lines(durable_backend)
                if ev == "tick"
            ]
            return any(t >= end + timedelta(seconds=1) for t in ticks)

        instances.poll(window_done, 40, "ticks past the 10 s window")
    finally:
        _stop(fleet)
    ticks = Counter(
        lab
        for ev, lab, _, _ in _lines(durable_backend)
        if ev == "tick" and start <= datetime.fromisoformat(lab) < end
    )
    where = Counter(inst for ev, _, inst, _ in _lines(durable_backend) if ev == "tick")
    print(f"{durable_backend.kind}: {sum(ticks.values())} firings in 10 s; by instance {where}")
    assert 9 <= sum(ticks.values()) <= 11, ticks
    assert set(ticks.values()) == {1}, f"a tick fired more than once: {ticks}"


@SHARED
def test_overlap_false_runs_one_firing_at_a_time_across_instances(
    durable_backend: Backend,
) -> None:
    fleet = instances.start(durable_backend, "A", "B", "C", app=APP, SCHEDULES_SLOW="1")
    try:
        instances.poll(
            lambda: sum(ev == "slow-end" for ev, _, _, _ in _lines(durable_backend)) >= 3,
            40,
            "three slow firings ended",
        )
    finally:
        _stop(fleet)
    steps = sorted(
        (at, ev, lab) for ev, lab, _, at in _lines(durable_backend) if ev.startswith("slow-")
    )
    running = 0
    for _, event, _ in steps:  # in time order: never two firings at once
        running += 1 if event == "slow-start" else -1
        assert running <= 1, steps
    starts = [lab for _, ev, lab in steps if ev == "slow-start"]
    assert len(starts) == len(set(starts)) >= 3  # each tick at most once, ticks skipped
    gaps = [
        (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()
        for a, b in itertools.pairwise(starts)
    ]
    assert all(gap >= 2 for gap in gaps), gaps  # the ticks in between were skipped


@SHARED
def test_one_off_firings_run_once_moved_and_cancelled(durable_backend: Backend) -> None:
    fleet = instances.start(durable_backend, "A", "B", "C", app=APP)
    a, b, c = fleet
    try:
        # moved: armed on A for +6 s, moved from B to +8 s (before the 100 below load
        # the fleet, so the move surely happens before the old time)
        now = datetime.now(timezone.utc)
        old_at = now + timedelta(seconds=6)
        (old_id,) = _post(
            a,
            "/schedule_once",
            {"items": [{"label": "moved", "run_at": old_at.isoformat(), "run_key": "mv"}]},
        )["ids"]
        new_at = now + timedelta(seconds=8)
        (new_id,) = _post(
            b,
            "/schedule_once",
            {"items": [{"label": "moved", "run_at": new_at.isoformat(), "run_key": "mv"}]},
        )["ids"]
        # cancelled: armed on A for +6 s, cancelled from C; a control firing after it
        (gone_id,) = _post(
            a, "/schedule_once", {"items": [{"label": "gone", "delay": 6, "run_key": "cx"}]}
        )["ids"]
        assert _post(c, "/cancel_scheduled/cx")["cancelled"] is True
        assert datetime.now(timezone.utc) < old_at, "the fleet was too slow to test a move"
        (control_id,) = _post(b, "/schedule_once", {"items": [{"label": "control", "delay": 9}]})[
            "ids"
        ]

        # 100 firings, armed through all three instances, due over the next 0.5-3 s
        ids: dict[str, str] = {}
        for index, instance in enumerate(fleet):
            items = [
                {"label": f"f{n}", "delay": 0.5 + (n % 10) * 0.25}
                for n in range(100)
                if n % 3 == index
            ]
            answer = _post(instance, "/schedule_once", {"items": items})
            ids.update(zip(answer["ids"], [i["label"] for i in items], strict=True))
        assert len(ids) == 100

        instances.poll(
            lambda: all(
                _ran(durable_backend)[label] for label in [*ids.values(), "moved", "control"]
            ),
            60,
            "every firing ran",
        )
        instances.poll(
            lambda: instances.all_terminal(a, [*ids, new_id]), 30, "every firing finished"
        )
    finally:
        _stop(fleet)
    ran = _ran(durable_backend)
    doubles = {label: n for label, n in ran.items() if n != 1}
    assert doubles == {}, f"ran more than once: {doubles}"
    assert len([label for label in ran if label.startswith("f")]) == 100
    where = Counter(inst for ev, _, inst, _ in _lines(durable_backend) if ev == "ran")
    print(f"{durable_backend.kind}: 100 firings ran on {dict(where)}")
    (moved_at,) = [at for ev, lab, _, at in _lines(durable_backend) if lab == "moved"]
    assert moved_at >= new_at.timestamp(), "the moved firing ran before its new time"
    assert "gone" not in ran
    restarted = instances.start(durable_backend, "D", app=APP)
    try:
        assert _status(restarted[0], old_id)["status"] == "cancelled"
        assert _status(restarted[0], gone_id)["status"] == "cancelled"
        assert _status(restarted[0], new_id)["status"] == "success"
        assert _status(restarted[0], control_id)["status"] == "success"
    finally:
        _stop(restarted)


@SHARED
def test_firings_armed_by_a_killed_instance_run_once_elsewhere(durable_backend: Backend) -> None:
    fleet = instances.start(durable_backend, "A", "B", "C", app=APP)
    a, b, _ = fleet
    try:
        items = [{"label": f"orphan{n}", "delay": 2.0 + n * 0.1} for n in range(10)]
        ids = _post(a, "/schedule_once", {"items": items})["ids"]
        a.kill()
        instances.poll(
            lambda: all(_ran(durable_backend)[f"orphan{n}"] for n in range(10)),
            30,
            "the killed instance's firings ran",
        )
        instances.poll(lambda: instances.all_terminal(b, ids), 30, "they finished")
    finally:
        _stop(fleet)
    ran = _ran(durable_backend)
    assert all(ran[f"orphan{n}"] == 1 for n in range(10)), ran
    assert {inst for ev, lab, inst, _ in _lines(durable_backend) if ev == "ran"} <= {"B", "C"}


@SHARED
def test_timeouts_and_cancelling_a_task_running_on_another_instance(
    durable_backend: Backend,
) -> None:
    fleet = instances.start(durable_backend, "A", "B", app=APP)
    a, b = fleet
    try:
        hang_id = _post(a, "/hang/h1")["id"]
        (started,) = instances.poll(
            lambda: [at for ev, lab, _, at in _lines(durable_backend) if lab == "h1"],
            30,
            "the hanging task started",
        )
        # FAILED within 2 s of its start (timeout=1); polled against that deadline
        deadline = started + 2.0
        while _status(b, hang_id)["status"] != "failed":
            assert time.time() < deadline, "the timed-out task was not FAILED within 2 s"
            time.sleep(0.05)
        assert "TaskTimeoutError" in _status(b, hang_id)["error"]

        # a PENDING task (a firing armed on A) cancelled from B never starts
        (waiting_id,) = _post(a, "/schedule_once", {"items": [{"label": "w1", "delay": 30}]})["ids"]
        assert _post(b, f"/cancel/{waiting_id}")["status"] == "cancelled"
        assert _status(a, waiting_id)["status"] == "cancelled"

        long_id = _post(a, "/long/l1")["id"]
        instances.poll(
            lambda: [
                1
                for ev, lab, inst, _ in _lines(durable_backend)
                if ev == "step" and lab == "l1" and inst == "A"
            ],
            30,
            "the long task runs on A",
        )
        answer = _post(b, f"/cancel/{long_id}")
        assert answer["cancel_requested"] is True
        instances.poll(lambda: _status(b, long_id)["status"] == "cancelled", 10, "CANCELLED on A")
        # it did not run on: its loop was left (its finally noted it), not finished
        instances.poll(
            lambda: [
                1 for ev, lab, _, _ in _lines(durable_backend) if (ev, lab) == ("stopped", "l1")
            ],
            10,
            "the long task's loop was left on A",
        )
        assert not [1 for ev, lab, _, _ in _lines(durable_backend) if ev == "end"]
        assert _status(a, long_id)["attempt"] == 1
    finally:
        _stop(fleet)
