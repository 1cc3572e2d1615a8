"""Reading tasks: ``task_manager.store`` from sync and async code.

``store.get()`` blocks until it has the answer, which is what a ``def`` route (run in
FastAPI's thread pool) wants; ``async def`` code awaits ``store.aget()``. A task accepted
a moment ago is visible at once, even before it has been written to the store.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager, TaskStatus

task_manager = TaskManager()
app = FastAPI()
task_manager.install(app)


@task_manager.task()
def thumbnail(image_id: int) -> str:
    return f"thumb-{image_id}"


@app.post("/images/{image_id}/thumbnail")
def make_thumbnail(image_id: int, background_tasks: ManagedBackgroundTasks) -> dict[str, Any]:
    task_id = background_tasks.add_task(thumbnail, image_id)
    record = task_manager.store.get(task_id)  # already visible, still PENDING
    assert record is not None
    return {"task_id": task_id, "status": record.status}


@app.get("/tasks/{task_id}")
def get_task(task_id: str) -> dict[str, Any]:
    record = task_manager.store.get(task_id)
    if record is None:
        raise HTTPException(status_code=404)
    return record.to_dict()


@app.get("/async/tasks/{task_id}")
async def get_task_async(task_id: str) -> dict[str, Any]:
    record = await task_manager.store.aget(task_id)
    if record is None:
        raise HTTPException(status_code=404)
    return record.to_dict()


@app.get("/tasks")
async def list_tasks(status: TaskStatus | None = None, limit: int = 20) -> dict[str, Any]:
    page = await task_manager.store.aquery(statuses=[status] if status else None, limit=limit)
    return {
        "items": [{"task_id": r.task_id, "status": r.status} for r in page.items],
        "next_cursor": page.next_cursor,
    }


@app.get("/stats")
def stats() -> dict[str, Any]:
    return task_manager.store.stats().model_dump(mode="json")
