"""The app of ``test_preload_workers.py``: imported once by gunicorn's master
(``--preload``), which then forks its workers from that process.

The manager is made at import, in the master, with no ``instance_id`` given: each
worker must still be an instance of its own. Configuration comes from the
environment: ``TASKFLOW_BACKEND`` (the store) and ``PRELOAD_RUN_LOG`` (a file each task
appends ``<label> <pid>`` to, in one write, when it runs).
"""

from __future__ import annotations

import os
import signal
from typing import Any

from fastapi import BackgroundTasks, FastAPI
from starlette.background import BackgroundTask

from fastapi_taskflow import TaskManager

RUN_LOG = os.environ["PRELOAD_RUN_LOG"]

task_manager = TaskManager(
    backend=os.environ["TASKFLOW_BACKEND"], liveness_seconds=1.0, poll_interval=0.1
)
app = FastAPI()
task_manager.install(app)


@task_manager.task(name="preload.record")
async def record(label: str) -> None:
    fd = os.open(RUN_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{label} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


@app.post("/tasks")
def add_tasks(count: int, background_tasks: BackgroundTasks, die: bool = False) -> dict[str, Any]:
    """Accept ``count`` tasks; ``die``: SIGKILL this worker once the response is sent,
    before any of them starts."""
    ids = [background_tasks.add_task(record, f"task-{n}") for n in range(count)]
    if die:
        background_tasks.tasks.insert(0, BackgroundTask(os.kill, os.getpid(), signal.SIGKILL))
    return {"ids": ids, "pid": os.getpid(), "instance": task_manager.instance_id}
