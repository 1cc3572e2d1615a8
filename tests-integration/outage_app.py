"""The app of ``test_outages.py``: steady enqueues through a store that restarts.

Configured by environment variables:

* ``TASKFLOW_BACKEND``: the backend URL (a private Redis or PostgreSQL of the test);
* ``OUTAGE_RUNS``: the file every execution of ``record_run`` appends its task id to;
* ``OUTAGE_LIVENESS``: ``liveness_seconds`` of the manager.

It shows the pattern the docs recommend for outages: ``BackendUnavailableError`` (the
store is known to be down, so ``add_task()`` accepted nothing) becomes a 503 the client
can retry. ``install()``'s middleware answers 503 by itself when the request's tasks
cannot be written before the response.
"""

from __future__ import annotations

import os
import threading

from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import JSONResponse

from fastapi_taskflow import TaskManager, get_task_context
from fastapi_taskflow.errors import BackendUnavailableError

RUNS = os.environ["OUTAGE_RUNS"]

task_manager = TaskManager(
    liveness_seconds=float(os.environ.get("OUTAGE_LIVENESS", "3")),
    poll_interval=0.2,
    shutdown_timeout=5,
)
app = FastAPI()
task_manager.install(app)

_runs_lock = threading.Lock()


@task_manager.task(retries=0)
def record_run(n: int) -> int:
    """Append this task's id to the runs file (one line per execution)."""
    ctx = get_task_context()
    task_id = ctx.task_id if ctx is not None else "?"
    with _runs_lock, open(RUNS, "a", encoding="utf-8") as runs:
        runs.write(f"{task_id}\n")
        runs.flush()
        os.fsync(runs.fileno())
    return n


@app.exception_handler(BackendUnavailableError)
async def store_unavailable(request: Request, exc: BackendUnavailableError) -> JSONResponse:
    """The store is down: nothing was accepted, the client may retry later."""
    return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})


@app.post("/enqueue")
def enqueue(n: int, background_tasks: BackgroundTasks) -> dict[str, str]:
    """Accept one task that runs after the response; answer its id."""
    return {"task_id": background_tasks.add_task(record_run, n)}


@app.post("/enqueue-queued")
def enqueue_queued(n: int) -> dict[str, str]:
    """Accept one task through the priority queue; answer its id."""
    return {"task_id": task_manager.add_task(record_run, n)}


@app.get("/tasks/{task_id}")
async def status(task_id: str) -> dict[str, str | None]:
    """The task's status as stored (``missing`` when the store has no such task)."""
    record = await task_manager.store.aget(task_id)
    return {"status": None if record is None else record.status.value}


@app.get("/pid")
def pid() -> dict[str, int]:
    """The server process id (the test checks the app was never restarted)."""
    return {"pid": os.getpid()}
