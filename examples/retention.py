"""Keeping the task history bounded: retention, purge now, and the memory backend's cap.

Finished tasks (success, failed, interrupted, cancelled, rejected) older than
``retention`` are deleted in the background by every instance; tasks still pending or
running never are. ``await task_manager.purge(older_than=...)`` deletes now, for example
from an admin route or a maintenance script.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI, Query

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager

# Keep one day of history (the default is 7 days; retention=None keeps everything).
# On the memory backend, "memory://?max_records=50000" also caps how many records are
# kept (default 10,000): the oldest finished tasks go first.
task_manager = TaskManager(retention=timedelta(days=1))
app = FastAPI()
task_manager.install(app)


@task_manager.task()
def resize(image_id: int) -> str:
    return f"resized {image_id}"


@app.post("/images/{image_id}/resize")
def start_resize(image_id: int, background_tasks: ManagedBackgroundTasks) -> dict[str, str]:
    return {"task_id": background_tasks.add_task(resize, image_id)}


@app.post("/admin/purge")
async def purge(minutes: float = Query(gt=0)) -> dict[str, int]:
    """Delete the tasks that finished more than ``minutes`` ago, now."""
    deleted = await task_manager.purge(older_than=timedelta(minutes=minutes))
    return {"deleted": deleted}
