"""Progress reporting.

``import_rows`` reports after every row; the reports are coalesced (at most a couple of
writes per second), so the record's ``progress`` and a page polling ``GET /tasks/{id}``
(or listening to ``task_manager.events()``) follow along cheaply.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, HTTPException

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager, task_progress

task_manager = TaskManager()
app = FastAPI()
task_manager.install(app)


@task_manager.task()
async def import_rows(total: int) -> int:
    task_progress(0.0, "starting")
    for row in range(1, total + 1):
        await asyncio.sleep(0.001)  # import one row
        task_progress(row / total, f"{row} of {total} rows")
    return total


@app.post("/imports")
def start_import(background_tasks: ManagedBackgroundTasks, rows: int = 500) -> dict[str, str]:
    return {"task_id": background_tasks.add_task(import_rows, rows)}


@app.get("/tasks/{task_id}")
def status(task_id: str) -> dict[str, Any]:
    record = task_manager.store.get(task_id)
    if record is None:
        raise HTTPException(status_code=404)
    messages = [entry.message for entry in record.logs if "progress" in entry.extra]
    return {"status": record.status, "progress": record.progress, "messages": messages}
