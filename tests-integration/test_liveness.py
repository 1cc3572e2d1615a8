"""Per-instance liveness with real processes: a dead instance's tasks move on in time, and
a store outage makes no live instance look dead.

* ``test_unstarted_tasks_of_a_killed_instance_run_elsewhere_within_10s`` (SQLite file,
  PostgreSQL, MySQL/MariaDB, Redis): two ``durability_app`` instances with the DEFAULT
  ``liveness_seconds``; A accepts a batch of background tasks and is SIGKILLed right
  after the response, before it starts any. Every task ends SUCCESS, ran exactly once,
  on B, and the last one is SUCCESS at most 10 s after the kill (the requirement: a dead
  instance's unstarted tasks run elsewhere within 10 s with the default settings).
* ``test_an_outage_of_three_liveness_periods_adopts_nothing`` (a private Redis and a
  private PostgreSQL, restartable, see ``store_servers``): two instances with
  ``liveness_seconds=1`` hold RUNNING tasks (blocked on a release file, some
  ``requeue_on_interrupt=True``) and PENDING ones behind them; the store is down for
  3.5 s (more than three liveness periods) and comes back. No task is adopted (no
  instance was dead), none runs twice, every one ends SUCCESS, and both instances are
  the same processes throughout.
"""

from __future__ import annotations

import inspect
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import instances  # tests-integration/ is on sys.path (pytest's pythonpath option)
import pytest
from store_servers import StoreServer, private_postgres, private_redis

from fastapi_taskflow import TaskManager
from fastapi_taskflow.isotime import parse_iso

durable_backend = instances.durable_backend
Backend = instances.Backend

ADOPTION_SIGNS = ("adopting", "re-running", "INTERRUPTED")

# -- a killed instance's unstarted tasks ---------------------------------------------------

BATCH = 30  # background tasks A accepts before it dies
REQUIRED = 10.0  # seconds from the kill to the last SUCCESS (the requirement)
DEFAULT_LIVENESS = 5.0  # TaskManager's default liveness_seconds (checked below)


def _batch() -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    for n in range(BATCH):
        func = "record" if n % 2 == 0 else "record_requeue"
        item: dict[str, object] = {"func": func, "label": f"unstarted-{n}"}
        if n % 5 == 0:
            item["key"] = f"unstarted-key-{n}-{uuid.uuid4().hex[:8]}"
        items.append(item)
    return items


def test_unstarted_tasks_of_a_killed_instance_run_elsewhere_within_10s(
    durable_backend: Backend,
) -> None:
    default = inspect.signature(TaskManager).parameters["liveness_seconds"].default
    assert default == DEFAULT_LIVENESS, f"TaskManager's default liveness is now {default}"

    a, b = instances.start(durable_backend, "A", "B", DURABILITY_LIVENESS_SECONDS="default")
    try:
        items = _batch()
        with a.client() as client:
            # ``die``: A SIGKILLs itself once the response is sent, before any task of
            # the request starts; the test kills it too the moment the 200 arrives.
            response = client.post("/tasks", json={"items": items, "die": True})
            killed_at = time.monotonic()
            killed_wall = time.time()
            a.kill()
        assert response.status_code == 200, response.text
        ids: list[str] = response.json()["ids"]
        labels = {task_id: str(item["label"]) for task_id, item in zip(ids, items, strict=True)}
        assert len(labels) == BATCH
        assert a.proc.returncode == -9

        found = instances.statuses(b, ids)
        assert set(found.values()) <= {"pending", "success"}, f"lost or odd: {found}"

        # Poll until every task is terminal (well past the requirement, so a slow run
        # reports how slow it was), then judge the time.
        def done() -> dict[str, str | None] | None:
            return instances.all_terminal(b, ids)

        final = instances.poll(done, 60, "every task of A terminal on B", interval=0.05)
        observed = time.monotonic() - killed_at
        with b.client() as client:
            records = [client.get(f"/status/{task_id}").json() for task_id in ids]
        finished = [record["finished_at"] for record in records]
        last_finish = max(parse_iso(f).timestamp() for f in finished if f)
        stored = last_finish - killed_wall

        problems = []
        for task_id, label in labels.items():
            ran = durable_backend.where("ran", label)
            if (final[task_id], ran) != ("success", ["B"]):
                problems.append((label, final[task_id], ran))
        assert not problems, f"{problems[:10]}\n{instances.diagnose([a, b])}"
        assert len(instances.warnings_in(b, "adopting task")) == BATCH, instances.diagnose([b])
        assert not instances.warnings_in(b, "INTERRUPTED")
        assert not instances.warnings_in(b, "re-running")
        for record in records:
            if record["idempotency_key"] is not None:
                assert record["idempotency_key"].startswith("unstarted-key-")

        print(
            f"\n[{durable_backend.kind}] kill -> last SUCCESS: {observed:.2f}s observed by "
            f"polling, {stored:.2f}s by the stored finished_at (required <= {REQUIRED:.0f}s, "
            f"liveness_seconds={DEFAULT_LIVENESS:.0f})"
        )
        assert observed <= REQUIRED, (
            f"the unstarted tasks of the killed instance took {observed:.2f}s to run "
            f"elsewhere (required: <= {REQUIRED}s)"
        )
        # Sanity: the default liveness (not the app's 1 s) was in effect. A dead owner
        # cannot be declared before its last heartbeat (at most liveness/5 before the
        # kill) went unchanged for a whole period: about 4 s at least.
        assert observed >= DEFAULT_LIVENESS * 0.6, (
            f"recovered in {observed:.2f}s: was liveness_seconds really left at its default?"
        )
    finally:
        for instance in (a, b):
            instance.kill()
            instance.stop()


# -- an outage of the store ----------------------------------------------------------------

LIVENESS = 1.0
DOWN_FOR = 3.5  # seconds the store is down: more than 3 x LIVENESS
QUIET_AFTER = 3 * LIVENESS  # seconds both instances are watched after the store is back
QUEUED_PER_INSTANCE = 12  # queued blocking tasks sent to each instance
SLOTS = 10  # QueueConfig().concurrency: queued tasks each instance runs at once
HELD_PER_INSTANCE = 2  # background requests per instance, each: a blocker, 3 behind it


def _holders(instance: str) -> list[list[dict[str, str]]]:
    """The items of background requests: a blocking task (RUNNING across the outage),
    then three quick ones that wait behind it (PENDING across the outage)."""
    requests: list[list[dict[str, str]]] = []
    for n in range(HELD_PER_INSTANCE):
        blocker, quick = ("block", "record") if n % 2 == 0 else ("block_requeue", "record_requeue")
        items = [{"func": blocker, "label": f"hold-{instance}{n}"}]
        items += [{"func": quick, "label": f"behind-{instance}{n}-{k}"} for k in range(3)]
        requests.append(items)
    return requests


@pytest.fixture(params=["redis", "postgres"])
def restartable_store(request: pytest.FixtureRequest) -> Iterator[tuple[str, StoreServer]]:
    """A private Redis or PostgreSQL the test may stop and start."""
    kind: str = request.param
    servers: AbstractContextManager[StoreServer] = (
        private_redis(start=True) if kind == "redis" else private_postgres(start=True)
    )
    with servers as server:
        yield kind, server


def test_an_outage_of_three_liveness_periods_adopts_nothing(
    restartable_store: tuple[str, StoreServer], tmp_path: Path
) -> None:
    kind, server = restartable_store
    backend = Backend(kind, server.url, f"tfo{uuid.uuid4().hex[:12]}", tmp_path)
    fleet = instances.start(backend, "A", "B", DURABILITY_LIVENESS_SECONDS=str(LIVENESS))
    try:
        pids = {}
        for instance in fleet:
            with instance.client() as client:
                pids[instance.name] = client.get("/health").json()["pid"]

        # -- each instance accepts RUNNING and PENDING tasks ------------------------------
        labels: dict[str, str] = {}  # task id -> label
        for instance in fleet:
            with instance.client() as client:
                for items in _holders(instance.name):
                    response = client.post("/tasks", json={"items": items})
                    response.raise_for_status()
                    for item, task_id in zip(items, response.json()["ids"], strict=True):
                        labels[task_id] = item["label"]
                for n in range(QUEUED_PER_INSTANCE):
                    func = "block" if n % 2 == 0 else "block_requeue"
                    label = f"queued-{instance.name}{n}-{func}"
                    response = client.post(
                        "/tasks/queued", json={"func": func, "label": label, "priority": n % 3}
                    )
                    response.raise_for_status()
                    labels[response.json()["id"]] = label
        ids = list(labels)
        queued_total = QUEUED_PER_INSTANCE * len(fleet)
        queued_running = min(queued_total, SLOTS * len(fleet))
        held = HELD_PER_INSTANCE * len(fleet)

        def all_blockers_started() -> bool:
            starts = backend.count("start")
            holds = sum(1 for label in starts if label.startswith("hold-"))
            queued = sum(1 for label in starts if label.startswith("queued-"))
            return holds == held and queued == queued_running

        instances.poll(all_blockers_started, 30, "every blocking task started")
        before = instances.statuses(fleet[0], ids)
        counts = {s: list(before.values()).count(s) for s in set(before.values())}
        assert counts == {
            "running": held + queued_running,
            "pending": len(ids) - held - queued_running,
        }, counts
        assert not backend.count("ran"), "a task behind a blocker ran already"

        # -- the store is down for more than three liveness periods -----------------------
        down_from = time.monotonic()
        server.stop()
        stopped = time.monotonic()
        time.sleep(DOWN_FOR)  # the outage itself: nothing to poll for
        restarting = time.monotonic()
        server.start()
        back = time.monotonic()
        down = restarting - stopped
        assert down >= 3 * LIVENESS, down

        # Both instances read the store again, and for three liveness periods after
        # that every task is as it was: RUNNING where it ran, PENDING where it waited.
        # (A read may still fail once on a connection the restart broke: counted, and
        # reported, not judged here.)
        refused: list[str] = []

        def read(instance: instances.Instance) -> dict[str, str | None] | None:
            with instance.client() as client:
                response = client.post("/statuses", json={"ids": ids})
            if response.status_code != 200:
                refused.append(f"{instance.name} {response.status_code} {response.text[:200]}")
                return None
            found: dict[str, str | None] = response.json()
            return found

        reading_by = time.monotonic() + 30
        while not all([read(instance) is not None for instance in fleet]):
            if time.monotonic() > reading_by:
                pytest.fail(
                    f"the instances did not all read the store again within 30 s of its "
                    f"return; {len(refused)} reads refused, the last: {refused[-2:]}"
                )
            time.sleep(0.1)
        reconnected = time.monotonic() - back
        refused_while_reconnecting = len(refused)
        quiet_until = time.monotonic() + QUIET_AFTER
        while time.monotonic() < quiet_until:
            for instance in fleet:
                now = read(instance)
                if now is None:
                    continue
                changed = {labels[i]: (before[i], now[i]) for i in ids if now[i] != before[i]}
                assert not changed, f"{changed}\n{instances.diagnose(fleet)}"
            time.sleep(0.2)

        # -- release: every task finishes where it started, once --------------------------
        backend.release.touch()

        def all_terminal() -> dict[str, str | None] | None:
            found = read(fleet[1])
            if found is None or not all(s in instances.TERMINAL for s in found.values()):
                return None
            return found

        final = instances.poll(all_terminal, 60, "every task terminal")
        assert set(final.values()) == {"success"}, (
            f"{ {labels[i]: s for i, s in final.items() if s != 'success'} }\n"
            f"{instances.diagnose(fleet)}"
        )
        for instance in fleet:
            for sign in ADOPTION_SIGNS:
                found = instances.warnings_in(instance, sign)
                assert not found, f"{instance.name} logged {sign!r}: {found[:5]}"
            assert not instances.warnings_in(instance, "taskflow engine task failed")
        twice = []
        for label in labels.values():
            event = "ran" if label.startswith("behind-") else "start"
            where = backend.where(event, label)
            ends = backend.where("end", label) if event == "start" else where
            if len(where) != 1 or ends != where:
                twice.append((label, where, ends))
        assert not twice, twice
        for label in labels.values():  # background tasks ran on the instance that took them
            if label.startswith(("hold-", "behind-")):
                event = "ran" if label.startswith("behind-") else "start"
                taker = label.split("-")[1][0]  # "hold-A0", "behind-A0-2": A
                assert backend.where(event, label) == [taker], label
        for instance in fleet:
            assert instance.proc.poll() is None, f"{instance.name} exited"
            with instance.client() as client:
                assert client.get("/health").json()["pid"] == pids[instance.name]
        print(
            f"\n[{kind}] store down {down:.1f}s ({restarting - down_from:.1f}s with the "
            f"shutdown), both instances reading again {reconnected:.2f}s after it was back; "
            f"{len(ids)} tasks, none adopted; reads refused after the return: "
            f"{refused_while_reconnecting} before both read again, "
            f"{len(refused) - refused_while_reconnecting} after {refused[-3:]}"
        )
    finally:
        for instance in fleet:
            instance.kill()
            instance.stop()
