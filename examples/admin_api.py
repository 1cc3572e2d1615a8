"""The admin API: mount TaskAdmin with the built-in login, then list, inspect and retry.

Run it with ``uvicorn examples.admin_api:app`` and open http://127.0.0.1:8000/tasks/dashboard
(user ``admin``, password from ``TASKFLOW_ADMIN_PASSWORD``, ``change-me`` by default).
"""

from __future__ import annotations

import os
import secrets

from fastapi import FastAPI

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager, task_log
from fastapi_taskflow.admin import BasicLogin, TaskAdmin

task_manager = TaskManager()
app = FastAPI()
task_manager.install(app)

# --8<-- [start:mount]
admin = TaskAdmin(
    app,
    task_manager,
    path="/tasks",
    title="Shop tasks",
    auth=BasicLogin(
        username="admin",
        password=os.environ.get("TASKFLOW_ADMIN_PASSWORD", "change-me"),
        # The same secret on every instance: a session works on all of them.
        secret=os.environ.get("TASKFLOW_ADMIN_SECRET") or secrets.token_urlsafe(32),
        max_age=8 * 3600,
    ),
)
# --8<-- [end:mount]

ATTEMPTS: dict[str, int] = {}


@task_manager.task(name="shop.send_receipt", retries=1)
async def send_receipt(order_id: str, email: str) -> str:
    """Fails on its first two attempts for orders starting with 'flaky'."""
    ATTEMPTS[order_id] = ATTEMPTS.get(order_id, 0) + 1
    task_log("rendering receipt", order_id=order_id)
    if order_id.startswith("flaky") and ATTEMPTS[order_id] <= 2:
        raise ConnectionError("mail server unreachable")
    return f"receipt for {order_id} sent to {email}"


@app.post("/orders/{order_id}")
async def place_order(
    order_id: str, email: str, background_tasks: ManagedBackgroundTasks
) -> dict[str, str]:
    task_id = background_tasks.add_task(send_receipt, order_id, email, tags={"order": order_id})
    return {"task_id": task_id}
