"""One instance's live tasks, seen from another: the store API and the event stream.

Two uvicorn instances of ``durability_app`` share a backend (SQLite file, PostgreSQL,
MySQL/MariaDB, Redis). Tasks accepted and run by A are read through B's
``task_manager.store.get`` (a sync route) while they are PENDING and RUNNING, and A's
lifecycle events — ``running``, the ``pending`` of a retry, ``success`` — arrive on B's
``task_manager.events()`` stream (served as server-sent events). A publishes its
tasks' events from about half a second after B's stream announced a reader (A reads
the store's readers twice a second): the test waits until a probe task's events
arrive, as a program that must not miss one reads the store after opening its stream.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import instances  # tests-integration/ is on sys.path (pytest's pythonpath option)

durable_backend = instances.durable_backend
Backend = instances.Backend
Instance = instances.Instance


class EventReader:
    """Reads an instance's ``/events`` stream on a thread into :attr:`events`."""

    def __init__(self, instance: Instance) -> None:
        self.events: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._url = f"{instance.base_url}/events"
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            timeout = httpx.Timeout(5.0, read=None)
            with httpx.stream("GET", self._url, timeout=timeout) as response:
                for line in response.iter_lines():
                    if line.startswith(": ready"):
                        self.ready.set()
                    elif line.startswith("data: "):
                        self.events.append(json.loads(line[len("data: ") :]))
        except httpx.HTTPError:
            pass  # the instance went away: the test is over
        except BaseException as exc:  # pragma: no cover - reported by the test
            self.error = exc

    def lifecycle(self, task_id: str) -> list[tuple[str, str | None]]:
        """``(status, instance_id)`` of the task's lifecycle events, in arrival order."""
        return [
            (e["status"], e["instance_id"])
            for e in list(self.events)
            if e["type"] == "lifecycle" and e["task_id"] == task_id
        ]

    def join(self) -> None:
        self._thread.join(10)


def _until_published(a: Instance, reader: EventReader) -> None:
    """Add quick tasks on ``a`` until one's SUCCESS reaches ``reader`` (``a`` has seen
    the reader); fail after 10 s."""

    def probe() -> bool:
        with a.client() as client:
            response = client.post("/tasks", json={"items": [{"func": "record", "label": "p"}]})
        (task_id,) = response.json()["ids"]
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            if any(status == "success" for status, _ in reader.lifecycle(task_id)):
                return True
            time.sleep(0.05)
        return False

    instances.poll(probe, 10, "A publishes for B's stream")


def _status(instance: Instance, task_id: str) -> dict[str, Any]:
    with instance.client() as client:
        response = client.get(f"/status/{task_id}")
        response.raise_for_status()
        found: dict[str, Any] = response.json()
        return found


def test_a_tasks_live_on_b(durable_backend: Backend) -> None:
    started = time.monotonic()
    a, b = instances.start(durable_backend, "A", "B")
    reader = EventReader(b)
    try:
        assert reader.ready.wait(10), "B's event stream did not open"
        _until_published(a, reader)
        with a.client() as client:
            first = client.post(
                "/tasks",
                json={
                    "items": [
                        {"func": "block", "label": "hold"},
                        {"func": "record", "label": "behind"},
                    ]
                },
            )
            flaky = client.post("/tasks", json={"items": [{"func": "flaky", "label": "flaky"}]})
        hold, behind = first.json()["ids"]
        (retried,) = flaky.json()["ids"]

        # RUNNING on A, read on B: the store and the stream agree.
        instances.poll(
            lambda: _status(b, hold)["status"] == "running", 10, "B sees A's task RUNNING"
        )
        record = _status(b, hold)
        assert record["owner"] == "A" and record["started_at"] is not None
        assert _status(b, behind)["status"] == "pending"  # waits behind `hold`, on A
        instances.poll(
            lambda: ("running", "A") in reader.lifecycle(hold) or None,
            10,
            "A's RUNNING event on B's stream",
        )
        instances.poll(
            lambda: ("running", "A") in reader.lifecycle(retried) or None,
            10,
            "A's RUNNING event of the flaky task on B's stream",
        )

        # Let them go: success, the retry's PENDING (with its error), and the next task.
        durable_backend.release.touch()
        instances.poll(
            lambda: instances.all_terminal(b, [hold, behind, retried]),
            20,
            "the tasks finish",
        )
        assert {_status(b, t)["status"] for t in (hold, behind, retried)} == {"success"}
        instances.poll(
            lambda: ("success", "A") in reader.lifecycle(behind) or None,
            10,
            "A's SUCCESS event of `behind` on B's stream",
        )
        assert reader.lifecycle(hold) == [("running", "A"), ("success", "A")]
        assert reader.lifecycle(behind) == [("running", "A"), ("success", "A")]
        flaky_events = reader.lifecycle(retried)
        # The retry runs on whichever instance claims it first; B delivers its own
        # events to its stream as well.
        assert [s for s, _ in flaky_events] == ["running", "pending", "running", "success"]
        assert flaky_events[:2] == [("running", "A"), ("pending", "A")], flaky_events
        pending_event = next(
            e for e in reader.events if e["task_id"] == retried and e.get("status") == "pending"
        )
        assert "first attempt of flaky fails" in (pending_event["error"] or "")
        assert reader.error is None
    finally:
        b.kill()  # ends the event stream (a graceful stop would wait for it)
        reader.join()
        for instance in (a, b):
            instance.stop()
    print(f"\n[{durable_backend.kind}] cross-instance view: {time.monotonic() - started:.1f}s")
