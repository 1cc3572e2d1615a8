"""Turning taskflow's errors into HTTP responses.

Register the handlers once and every route gets them: a full queue becomes 429 with
``Retry-After``, an unreachable backend 503 (nothing was accepted, so nothing is lost),
and bad task input 400.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from fastapi_taskflow import (
    BackendUnavailableError,
    InvalidTaskError,
    ManagedBackgroundTasks,
    QueueConfig,
    QueueFullError,
    TaskManager,
)

task_manager = TaskManager(queues={"imports": QueueConfig(concurrency=1, max_size=1)})
app = FastAPI()
task_manager.install(app)

imported: list[str] = []


@task_manager.task(queue="imports")
async def import_file(name: str) -> None:
    imported.append(name)


@app.exception_handler(QueueFullError)
async def queue_full(request: Request, exc: QueueFullError) -> JSONResponse:
    return JSONResponse(
        status_code=429,
        content={"detail": f"the {exc.queue} queue is full, retry later", "task_id": exc.task_id},
        headers={"Retry-After": "10"},
    )


@app.exception_handler(BackendUnavailableError)
async def backend_down(request: Request, exc: BackendUnavailableError) -> JSONResponse:
    return JSONResponse(status_code=503, content={"detail": "task storage is unavailable"})


@app.exception_handler(InvalidTaskError)
async def bad_task(request: Request, exc: InvalidTaskError) -> JSONResponse:
    return JSONResponse(status_code=400, content={"detail": str(exc)})


@app.post("/imports")
def start_import(
    name: str, background_tasks: ManagedBackgroundTasks, label: str | None = None
) -> dict[str, str]:
    # tags must be dict[str, str]; a missing label here becomes None -> InvalidTaskError.
    task_id = background_tasks.add_task(import_file, name, tags={"label": label})
    return {"task_id": task_id}
