"""gunicorn ``--preload``: workers forked from one process that imported the app.

The master imports ``preload_app`` (its ``TaskManager`` is made there, no
``instance_id`` given) and forks two uvicorn workers from it. Each worker must be an
instance of its own: its own heartbeat and owner name. Before, every worker inherited
the master's name, so a worker killed after accepting tasks looked alive as long as a
sibling beat under that name, and a worker shutting down deleted the heartbeat its
siblings shared. Here one worker accepts tasks and is SIGKILLed before it starts them:
the others (its sibling, and the worker gunicorn forks in its place) adopt and run
every one of them, once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import instances  # tests-integration/ is on sys.path (pytest's pythonpath option)

from fastapi_taskflow.backends import open_backend
from fastapi_taskflow.protocols import TaskBackend

durable_backend = instances.durable_backend
Backend = instances.Backend

HERE = Path(__file__).resolve().parent
WORKERS = 2
TASKS = 10


def _in_store(url: str, call: Any) -> Any:
    """``await call(backend)`` on a backend of the test's own, opened for the call."""

    async def run() -> Any:
        backend: TaskBackend = open_backend(url)
        await backend.open()
        try:
            return await call(backend)
        finally:
            await backend.close()

    return asyncio.run(run())


def test_preloaded_workers_are_instances_of_their_own(durable_backend: Backend) -> None:
    port = instances.free_port()
    log = durable_backend.workdir / "gunicorn.log"
    env = {
        **os.environ,
        "TASKFLOW_BACKEND": durable_backend.url,
        "PRELOAD_RUN_LOG": str(durable_backend.run_log),
    }
    command = [sys.executable, "-m", "gunicorn", "--preload", "--workers", str(WORKERS)]
    command += ["--worker-class", "uvicorn.workers.UvicornWorker", "--graceful-timeout", "5"]
    command += ["--bind", f"127.0.0.1:{port}", "preload_app:app"]
    with log.open("wb") as out:
        server = subprocess.Popen(command, cwd=HERE, env=env, stdout=out, stderr=out)
    url = durable_backend.url
    try:
        # Every worker beats under a name of its own.
        def beating() -> dict[str, Any] | None:
            heartbeats = _in_store(url, lambda backend: backend.heartbeats())
            return heartbeats if len(heartbeats) >= WORKERS else None

        names = instances.poll(beating, 30, f"{WORKERS} heartbeats", interval=0.2)
        assert len(names) == WORKERS, names

        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            answer = client.post("/tasks", params={"count": TASKS, "die": True}).json()
        killed = answer["pid"]
        assert answer["instance"] in names

        # The killed worker's tasks run elsewhere, each once.
        def finished() -> bool:
            records = _in_store(
                url, lambda backend: asyncio.gather(*(backend.get(i) for i in answer["ids"]))
            )
            return all(r is not None and r.status.value == "success" for r in records)

        instances.poll(finished, 30, "the killed worker's tasks SUCCESS on another worker")
        runs = [line.split() for line in durable_backend.run_log.read_text().splitlines()]
        assert Counter(label for label, _ in runs) == {f"task-{n}": 1 for n in range(TASKS)}
        assert str(killed) not in {pid for _, pid in runs}
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        print(log.read_text()[-3000:])
