"""SIGKILL of a real instance: every task it held ends terminal on the survivors.

For each shared backend (SQLite file, PostgreSQL, MySQL/MariaDB, Redis), with
``durability_app`` served by uvicorn processes and ``liveness_seconds=1``:

* ``test_sigkill_with_200_tasks``: instance A holds 200 tasks — RUNNING and PENDING, on
  the Starlette path and on the queue — while B runs; A is SIGKILLed. Every task ends
  terminal: never-started ones ran exactly once (on B), RUNNING ones are INTERRUPTED, or
  ran again on B for ``requeue_on_interrupt=True`` tasks.
* ``test_sigkill_right_after_response``: A is killed right after the 200 response that
  carries the task ids, before it starts them; the next instance finds every id and runs
  the tasks.
* ``test_a_killed_instance_s_running_task_keeps_its_log_lines``: what a long task logged
  is in the store while it runs (read on another instance), and stays with the task
  after its instance is SIGKILLed.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import instances  # tests-integration/ is on sys.path (pytest's pythonpath option)

durable_backend = instances.durable_backend
Backend = instances.Backend

REQUESTS = 16  # background requests to A, each: one blocking task, then 9 quick ones
PER_REQUEST = 10
QUEUED = 40  # queued blocking tasks through A: half requeue_on_interrupt
TOTAL = REQUESTS * PER_REQUEST + QUEUED
RECOVERY_DEADLINE = 60.0


def _background_batch(index: int) -> dict[str, object]:
    holder = "block" if index % 2 == 0 else "block_requeue"
    items = [{"func": holder, "label": f"hold-{holder}-{index}"}]
    items += [{"func": "record", "label": f"pend-{index}-{n}"} for n in range(PER_REQUEST - 1)]
    return {"items": items}


def test_sigkill_with_200_tasks(durable_backend: Backend) -> None:
    started = time.monotonic()
    a, b = instances.start(durable_backend, "A", "B")
    try:
        # -- A accepts 200 tasks while B runs ------------------------------------------
        with a.client() as client:

            def send(index: int) -> list[str]:
                response = client.post("/tasks", json=_background_batch(index))
                response.raise_for_status()
                ids: list[str] = response.json()["ids"]
                return ids

            with ThreadPoolExecutor(8) as pool:
                batches = list(pool.map(send, range(REQUESTS)))
            queued: dict[str, str] = {}
            for n in range(QUEUED):
                func = "block" if n % 2 == 0 else "block_requeue"
                label = f"queued-{func}-{n}"
                response = client.post(
                    "/tasks/queued", json={"func": func, "label": label, "priority": n % 3}
                )
                response.raise_for_status()
                queued[response.json()["id"]] = label
        labels: dict[str, str] = dict(queued)
        for index, ids in enumerate(batches):
            for item, task_id in zip(_background_batch(index)["items"], ids, strict=True):
                labels[task_id] = item["label"]  # type: ignore[index]
        assert len(labels) == TOTAL

        # Every background request's first task is running on A, its 9 others wait
        # behind it; the queue's 2 x 10 slots are busy (on A and B), 20 wait in the queue.
        def busy() -> bool:
            starts = durable_backend.count("start")
            holds = sum(n for label, n in starts.items() if label.startswith("hold-"))
            queued_starts = sum(n for label, n in starts.items() if label.startswith("queued-"))
            return holds == REQUESTS and queued_starts == 20

        instances.poll(busy, 30, "A's blocking tasks all started")
        on_a_queued = {
            label for label in queued.values() if durable_backend.where("start", label) == ["A"]
        }
        assert on_a_queued, "A ran none of the queued tasks: nothing to recover there"
        seen = instances.statuses(b, list(labels))
        for task_id, label in labels.items():
            if label.startswith("hold-") or label in on_a_queued:
                assert seen[task_id] == "running", (label, seen[task_id])
            elif label.startswith("pend-"):
                assert seen[task_id] == "pending", (label, seen[task_id])

        # -- kill A; let blocking tasks finish from now on --------------------------
        a.kill()
        durable_backend.release.touch()
        final = instances.poll(
            lambda: instances.all_terminal(b, list(labels)),
            RECOVERY_DEADLINE,
            "every task of A terminal on B",
        )

        # -- every task: the right status, run the right number of times ----------------
        problems = []
        for task_id, label in labels.items():
            status = final[task_id]
            starts = durable_backend.where("start", label)
            ends = durable_backend.where("end", label)
            ran = durable_backend.where("ran", label)
            requeue = "block_requeue" in label
            if label.startswith("pend-"):
                expected = ("success", [], [], ["B"])
            elif label.startswith("hold-") or label in on_a_queued:
                expected = (
                    ("success", ["A", "B"], ["B"], [])
                    if requeue
                    else ("interrupted", ["A"], [], [])
                )
            else:  # a queued task started on B, or one that waited in the queue
                expected = ("success", ["B"], ["B"], [])
            if (status, starts, ends, ran) != expected:
                problems.append((label, (status, starts, ends, ran), "expected", expected))
        assert not problems, problems[:10]
        interrupted = sum(1 for s in final.values() if s == "interrupted")
        assert interrupted == REQUESTS // 2 + sum(
            1 for label in on_a_queued if "block_requeue" not in label
        )
        assert len(final) == TOTAL
    finally:
        for instance in (a, b):
            instance.kill()
            instance.stop()
    print(
        f"\n[{durable_backend.kind}] 200-task SIGKILL recovery: {time.monotonic() - started:.1f}s"
    )


def test_sigkill_right_after_response(durable_backend: Backend) -> None:
    """The ids in a 200 response survive the instance's death before it ran them."""
    started = time.monotonic()
    (a,) = instances.start(durable_backend, "A")
    b = None
    try:
        items = [
            {"func": "record", "label": "background"},
            {"func": "record", "label": "background-keyed", "key": "after-response-key"},
            {"func": "record_requeue", "label": "queued", "route": "queued", "priority": 5},
            {
                "func": "record_requeue",
                "label": "queued-keyed",
                "route": "queued",
                "key": "after-response-queued-key",
            },
        ]
        with a.client() as client:
            # ``die``: A SIGKILLs itself once the response is sent, before it runs any
            # task of this request; the test kills it too the moment the 200 arrives.
            response = client.post("/tasks", json={"items": items, "die": True})
            a.kill()
        assert response.status_code == 200, response.text
        ids: list[str] = response.json()["ids"]
        assert len(set(ids)) == len(items)
        assert a.proc.returncode == -9
        assert not durable_backend.count("ran")["background"], "A ran it before dying"

        (b,) = instances.start(durable_backend, "B")
        found = instances.statuses(b, ids)
        assert all(found[i] is not None for i in ids), f"lost by the kill: {found}"
        final = instances.poll(
            lambda: instances.all_terminal(b, ids), RECOVERY_DEADLINE, "the tasks run on B"
        )
        assert set(final.values()) == {"success"}, final
        assert durable_backend.where("ran", "background") == ["B"]
        assert durable_backend.where("ran", "background-keyed") == ["B"]
        # The queued task may have been claimed by A between the write and the kill;
        # requeue_on_interrupt makes it run (again) on B then.
        for label in ("queued", "queued-keyed"):
            assert durable_backend.where("ran", label)[-1:] in (["A"], ["B"]), label
        with b.client() as client:
            record = client.get(f"/status/{ids[1]}").json()
            assert record["idempotency_key"] == "after-response-key"
    finally:
        a.kill()
        a.stop()
        if b is not None:
            b.kill()
            b.stop()
    print(f"\n[{durable_backend.kind}] kill after response: {time.monotonic() - started:.1f}s")


def test_a_killed_instance_s_running_task_keeps_its_log_lines(durable_backend: Backend) -> None:
    a, b = instances.start(durable_backend, "A", "B")
    try:
        with a.client() as client:
            response = client.post("/tasks", json={"items": [{"func": "chatty", "label": "c"}]})
            response.raise_for_status()
        (task_id,) = response.json()["ids"]
        with b.client() as client:
            instances.poll(
                lambda: client.get(f"/logs/{task_id}").json() == ["working on c"],
                30,
                "A's running task's line readable on B",
            )
            assert instances.statuses(b, [task_id]) == {task_id: "running"}
            a.kill()
            instances.poll(
                lambda: instances.all_terminal(b, [task_id]), RECOVERY_DEADLINE, "A found dead"
            )
            assert instances.statuses(b, [task_id]) == {task_id: "interrupted"}
            assert client.get(f"/logs/{task_id}").json()[0] == "working on c"
    finally:
        for instance in (a, b):
            instance.kill()
            instance.stop()
