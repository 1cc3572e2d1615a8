"""The three ways a route gets a ``ManagedBackgroundTasks``.

All three hand the route the same kind of object; pick per route. The second and third
need ``task_manager.install(app)``; the first works with or without it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import BackgroundTasks, Depends, FastAPI

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager

task_manager = TaskManager()
# The explicit dependency, as a reusable annotation (`tasks=Depends(task_manager.get_tasks)`
# as a default value works the same).
Tasks = Annotated[ManagedBackgroundTasks, Depends(task_manager.get_tasks)]

app = FastAPI()
task_manager.install(app)

welcomed: list[str] = []


@task_manager.task(retries=1)
def send_welcome_email(address: str) -> None:
    welcomed.append(address)


# 1. Explicit dependency.
@app.post("/signup/dependency")
def signup_dependency(email: str, tasks: Tasks) -> dict[str, str]:
    return {"task_id": tasks.add_task(send_welcome_email, email)}


# 2. Annotate the parameter ManagedBackgroundTasks (after install).
@app.post("/signup/annotation")
def signup_annotation(email: str, background_tasks: ManagedBackgroundTasks) -> dict[str, str]:
    return {"task_id": background_tasks.add_task(send_welcome_email, email)}


# 3. Keep the plain BackgroundTasks annotation (after install): existing code is managed
#    unchanged, and add_task() now returns the task id.
@app.post("/signup/bare")
def signup_bare(email: str, background_tasks: BackgroundTasks) -> dict[str, str | None]:
    task_id = background_tasks.add_task(send_welcome_email, email)
    return {"task_id": task_id, "class": type(background_tasks).__name__}
