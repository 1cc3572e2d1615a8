"""Quickstart: a complete app with one managed background task.

Run it with ``uvicorn examples.quickstart:app`` from the repository root, then::

    curl -X POST 'http://127.0.0.1:8000/signup?email=ada@example.com'
    curl http://127.0.0.1:8000/tasks/<task_id>
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager, task_log

task_manager = TaskManager()  # in-process backend; pass a URL for a shared one
app = FastAPI()
task_manager.install(app)  # managed BackgroundTasks, durable ids, graceful shutdown

outbox: list[str] = []  # stands in for a mail provider


@task_manager.task(retries=3, delay=1.0, backoff=2.0)
def send_welcome_email(address: str) -> None:
    task_log("sending welcome email", address=address)
    outbox.append(address)


@app.post("/signup")
def signup(email: str, background_tasks: ManagedBackgroundTasks) -> dict[str, str]:
    task_id = background_tasks.add_task(send_welcome_email, email)
    return {"task_id": task_id}


@app.get("/tasks/{task_id}")
def task_status(task_id: str) -> dict[str, Any]:
    record = task_manager.store.get(task_id)
    if record is None:
        raise HTTPException(status_code=404, detail="no such task")
    return {"status": record.status, "attempt": record.attempt, "error": record.error}
