"""Timeouts and cancellation.

* ``fetch_feed`` may run 2 seconds per attempt: a hanging attempt is cancelled at its
  deadline, fails with ``TaskTimeoutError`` and is retried once.
* ``render_video`` is a long async task: ``DELETE /tasks/{id}`` cancels it wherever it
  runs (``CancelledError`` at its next ``await``; its ``finally`` still runs).
* ``crunch_numbers`` is sync: a thread cannot be interrupted, so it checks
  ``cancel_requested`` between steps and stops itself.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import FastAPI, HTTPException

from fastapi_taskflow import (
    ManagedBackgroundTasks,
    TaskManager,
    TaskNotFoundError,
    TaskStateError,
    get_task_context,
)

task_manager = TaskManager()
app = FastAPI()
task_manager.install(app)

feeds = {"slow": 3600.0, "fast": 0.0}
cleaned_up: list[str] = []


@task_manager.task(timeout=2, retries=1)
async def fetch_feed(name: str) -> str:
    await asyncio.sleep(feeds[name])
    return f"fetched {name}"


# Long jobs run on a queue of their own (so a request never waits for them).
@task_manager.task(queue="media")
async def render_video(video_id: int) -> None:
    try:
        for _ in range(10_000):
            await asyncio.sleep(0.05)  # one frame
    finally:
        cleaned_up.append(f"video {video_id}")


@task_manager.task(queue="media")
def crunch_numbers(rows: int) -> int:
    ctx = get_task_context()
    assert ctx is not None
    done = 0
    for _ in range(rows):
        ctx.raise_if_cancelled()  # or: if ctx.cancel_requested: clean up and return
        time.sleep(0.01)
        done += 1
    return done


@app.post("/feeds/{name}")
def fetch(name: str, background_tasks: ManagedBackgroundTasks) -> dict[str, str]:
    return {"task_id": background_tasks.add_task(fetch_feed, name)}


@app.post("/videos/{video_id}")
def render(video_id: int, background_tasks: ManagedBackgroundTasks) -> dict[str, str]:
    return {"task_id": background_tasks.add_task(render_video, video_id)}


@app.post("/crunch/{rows}")
def crunch(rows: int, background_tasks: ManagedBackgroundTasks) -> dict[str, str]:
    return {"task_id": background_tasks.add_task(crunch_numbers, rows)}


@app.delete("/tasks/{task_id}")
async def cancel(task_id: str) -> dict[str, Any]:
    try:
        record = await task_manager.cancel(task_id)
    except TaskNotFoundError:
        raise HTTPException(status_code=404) from None
    except TaskStateError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    return {"status": record.status, "cancel_requested": record.cancel_requested}


@app.get("/tasks/{task_id}")
def status(task_id: str) -> dict[str, Any]:
    record = task_manager.store.get(task_id)
    if record is None:
        raise HTTPException(status_code=404)
    return {"status": record.status, "attempt": record.attempt, "error": record.error}
