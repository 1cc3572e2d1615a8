"""A process forked from one that used the manager is an instance of its own.

``multiprocessing`` forks the app's process (the default on Linux before Python 3.14),
gunicorn's ``--preload`` forks workers from the process that imported the app. The
child must not share its parent's name (heartbeat, owner), nor lean on its parent's
threads: a sync read goes through a bridge thread, a ``def`` task through a thread
pool, and neither thread exists in the child. Each case runs in a process of its own
(``python -c``), which forks; the child reports what it saw.

Across real workers and stores: ``tests-integration/test_preload_workers.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, os, signal, sys, time
    from fastapi_taskflow import ManagedBackgroundTasks, TaskManager

    tm = TaskManager(backend=sys.argv[1])

    @tm.task(name="tests.fork.square")
    def square(n: int) -> int:  # a def task: runs on the manager's thread pool
        return n * n

    async def run_one(n: int) -> str:
        tasks = ManagedBackgroundTasks(tm)
        task_id = tasks.add_task(square, n)
        await tasks()
        return task_id

    # The parent uses everything that holds a thread: the pool, the bridge (a sync read
    # with no loop running).
    first = asyncio.run(run_one(3))
    assert tm.store.get(first).result == 9
    parent = tm.instance_id

    child = os.fork()
    if child == 0:
        signal.alarm(45)  # a child that hangs ends by itself (the test fails, nothing stays)
        began = time.monotonic()
        second = asyncio.run(run_one(4))
        record = tm.store.get(second)
        seen = {
            "parent": parent,
            "child": tm.instance_id,
            "result": record.result if record else None,
            "first_seen": tm.store.get(first) is not None,
            "seconds": time.monotonic() - began,
        }
        print(json.dumps(seen), flush=True)
        sys.exit(0)
    _, status = os.waitpid(child, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
    """
)


def test_a_forked_child_has_its_own_name_and_threads(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, f"sqlite:///{tmp_path}/tasks.db"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["child"] != seen["parent"]
    assert seen["result"] == 16  # its def task ran on a pool of its own
    assert seen["first_seen"]  # it reads the shared store through a bridge of its own
    assert seen["seconds"] < 20, seen  # nothing waited for a thread of the parent
