"""Task ids are version-7 UUIDs that grow over time: unique across threads and forked
processes, strictly increasing in the order one thread takes them (so a SQL store's
primary-key index grows at its end), and carrying the time they were taken (to within
``FRESH_FOR``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import pytest

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager, task_ids
from fastapi_taskflow.task_ids import new_task_id

MANY = 3 * 16 * task_ids.BATCH  # three milliseconds' worth of batches, and more


def _millisecond(task_id: str) -> int:
    return int(task_id[:8] + task_id[9:13], 16)


def test_ids_are_canonical_version_7_uuids() -> None:
    ids = [new_task_id() for _ in range(MANY)]
    assert len(set(ids)) == MANY
    for task_id in ids:
        parsed = uuid.UUID(task_id)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == task_id


def test_ids_increase_and_carry_the_time_they_were_made() -> None:
    before = time.time_ns() // 1_000_000
    task_ids._refill()  # the ids taken from here on are made from here on
    ids = [new_task_id() for _ in range(MANY)]
    after = time.time_ns() // 1_000_000
    assert ids == sorted(ids) and len(set(ids)) == MANY
    # a millisecond holds 16 batches: a faster caller borrows the next milliseconds
    borrowed = MANY // (16 * task_ids.BATCH) + 1
    assert before <= _millisecond(ids[0]) <= _millisecond(ids[-1]) <= after + borrowed


def test_ids_keep_increasing_when_the_clock_goes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    task_ids._refill()
    earlier = [new_task_id() for _ in range(task_ids.BATCH)]
    an_hour_ago = time.time_ns() - 3600 * 10**9
    monkeypatch.setattr(task_ids, "_time_ns", lambda: an_hour_ago)
    task_ids._refill()
    later = [new_task_id() for _ in range(MANY)]
    assert earlier + later == sorted(earlier + later)
    assert len(set(earlier + later)) == len(earlier) + MANY


def test_an_id_taken_after_a_quiet_spell_carries_the_time_it_was_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("_last", "_ids", "_stale_at"):  # no batch from the future stays behind
        monkeypatch.setattr(task_ids, name, getattr(task_ids, name))
    task_ids._refill()
    first = new_task_id()  # the rest of its batch stays unused
    an_hour = 3600 * 10**9
    an_hour_later = time.time_ns() + an_hour
    monkeypatch.setattr(task_ids, "_time_ns", lambda: an_hour_later)
    monkeypatch.setattr(task_ids, "_monotonic_ns", lambda: time.monotonic_ns() + an_hour)
    second = new_task_id()
    assert _millisecond(second) == an_hour_later // 1_000_000 > _millisecond(first)


def test_threads_never_share_an_id_and_each_takes_increasing_ones() -> None:
    taken: list[list[str]] = [[] for _ in range(4)]
    start = threading.Barrier(len(taken))

    def take(into: list[str]) -> None:
        start.wait()
        for _ in range(MANY):
            into.append(new_task_id())

    threads = [threading.Thread(target=take, args=(into,)) for into in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [task_id for ids in taken for task_id in ids]
    assert len(set(every)) == len(every) == 4 * MANY
    for ids in taken:
        assert ids == sorted(ids)


# The forks happen in a fresh interpreter of their own, never in the test process: a
# pytest-xdist worker runs threads of its own (and of earlier tests) whose locks a forked
# child would inherit, and a child left alive there would hold up the worker's exit
# (multiprocessing joins its children at exit).
FORKING = """
import json, multiprocessing, sys
from fastapi_taskflow import task_ids

def child_ids(queue):
    queue.put([task_ids.new_task_id() for _ in range(100)])

context = multiprocessing.get_context("fork")
queue = context.Queue()
task_ids.new_task_id()  # a batch is half taken when the process forks
if sys.argv[1] == "while-a-batch-is-made":
    task_ids._lock.acquire()  # as if a thread were making a batch at the fork
child = context.Process(target=child_ids, args=(queue,))
child.start()
if sys.argv[1] == "while-a-batch-is-made":
    task_ids._lock.release()
try:
    from_child = queue.get(timeout=20)
finally:
    child.join(timeout=5)
    if child.is_alive():
        child.kill()
here = [task_ids.new_task_id() for _ in range(100)]
print(json.dumps({"child": from_child, "parent": here, "exitcode": child.exitcode}))
"""


def _fork_and_take_ids(when: str) -> dict[str, Any]:
    """Run ``FORKING`` in a new interpreter; what its parent and forked child took."""
    process = subprocess.Popen(
        [sys.executable, "-c", FORKING, when],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=60)
    finally:  # the interpreter and any child it forked, when the deadline passed
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


def test_a_forked_child_makes_ids_of_its_own() -> None:
    taken = _fork_and_take_ids("after-a-batch-is-made")
    assert taken["exitcode"] == 0
    assert len(set(taken["child"])) == 100
    assert not set(taken["child"]) & set(taken["parent"])


def test_a_child_forked_while_a_batch_is_being_made_still_makes_ids() -> None:
    taken = _fork_and_take_ids("while-a-batch-is-made")
    assert len(set(taken["child"])) == 100
    assert not set(taken["child"]) & set(taken["parent"])


@pytest.mark.anyio
async def test_tasks_added_one_after_another_get_increasing_ids() -> None:
    tm = TaskManager()

    @tm.task()
    async def job(n: int) -> None:
        return None

    async with tm:
        tasks = ManagedBackgroundTasks(tm)
        ids = [tasks.add_task(job, n) for n in range(2 * task_ids.BATCH)]
        await tasks()
        assert ids == sorted(ids)
        assert all(uuid.UUID(task_id).version == 7 for task_id in ids)
