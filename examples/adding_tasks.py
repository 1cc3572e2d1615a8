"""Adding tasks from routes: arguments, task ids, status routes and routing options.

This app uses the explicit dependency ``Depends(task_manager.get_tasks)`` and no
``install()``, so it passes ``task_manager.lifespan`` to FastAPI for a graceful shutdown.
Run it with ``uvicorn examples.adding_tasks:app``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager

task_manager = TaskManager()
# The explicit dependency, as a reusable annotation (`tasks=Depends(task_manager.get_tasks)`
# as a default value works the same).
Tasks = Annotated[ManagedBackgroundTasks, Depends(task_manager.get_tasks)]

app = FastAPI(lifespan=task_manager.lifespan)

sent: list[str] = []
resized: list[tuple[int, int, int]] = []
notified: list[int] = []
otps: list[str] = []


@task_manager.task(retries=2, delay=1.0)
def send_email(address: str) -> None:
    sent.append(address)


@task_manager.task()
def resize_image(image_id: int, width: int, height: int) -> str:
    resized.append((image_id, width, height))
    return f"{image_id}@{width}x{height}"


@task_manager.task()
async def notify(user_id: int) -> None:
    await asyncio.sleep(0)  # an async task runs on the event loop
    notified.append(user_id)


@task_manager.task()
async def send_otp(phone: str) -> None:
    otps.append(phone)


# -- arguments and task ids -------------------------------------------------------------


@app.post("/signup")
def signup(email: str, tasks: Tasks):
    task_id = tasks.add_task(send_email, email)  # positional
    return {"task_id": task_id}


@app.post("/signup-by-keyword")
def signup_by_keyword(email: str, tasks: Tasks):
    task_id = tasks.add_task(send_email, address=email)  # keyword
    return {"task_id": task_id}


@app.post("/images/{image_id}/resize")
def resize(image_id: int, tasks: Tasks):
    task_id = tasks.add_task(resize_image, image_id, width=800, height=600)  # mixed
    return {"task_id": task_id}


# -- reading a task back ----------------------------------------------------------------


@app.get("/tasks/{task_id}")
def task_status(task_id: str) -> dict[str, Any]:
    record = task_manager.store.get(task_id)  # blocking read: fine in a `def` route
    if record is None:
        raise HTTPException(status_code=404)
    return record.to_dict()


@app.get("/async/tasks/{task_id}")
async def task_status_async(task_id: str) -> dict[str, Any]:
    record = await task_manager.store.aget(task_id)  # never blocks the event loop
    if record is None:
        raise HTTPException(status_code=404)
    return record.to_dict()


# -- routing: eager and priority --------------------------------------------------------


@app.post("/users/{user_id}/notify")
def notify_now(user_id: int, tasks: Tasks):
    # Starts on the event loop right away, before the response is sent.
    return {"task_id": tasks.add_task(notify, user_id, eager=True)}


@app.post("/users/{user_id}/notify-async")
async def notify_now_async(user_id: int, tasks: Tasks):
    return {"task_id": tasks.add_task(notify, user_id, eager=True)}


@app.post("/otp")
def request_otp(phone: str, tasks: Tasks):
    # Runs from the priority queue; eager=True would be ignored here.
    return {"task_id": tasks.add_task(send_otp, phone, priority=9)}
