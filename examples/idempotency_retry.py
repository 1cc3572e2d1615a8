"""An operator retry of a FAILED keyed task takes its idempotency key back.

The first refund fails and releases its key. An operator retries it (here through the
admin API; the dashboard and ``taskflow retry`` do the same): the task is PENDING again
and holds ``refund-<order>`` again, so a client that sends the refund request once more
gets the retried task's id, and the order is refunded once.
"""

from __future__ import annotations

from fastapi import FastAPI

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager
from fastapi_taskflow.admin import TaskAdmin

task_manager = TaskManager()
app = FastAPI()
task_manager.install(app)
TaskAdmin(app, task_manager)  # POST /tasks/api/tasks/{task_id}/retry

attempts: list[int] = []
refunded: list[int] = []


@task_manager.task()
async def refund(order_id: int) -> None:
    attempts.append(order_id)
    if len(attempts) == 1:
        raise RuntimeError("the payment provider timed out")
    refunded.append(order_id)


@app.post("/orders/{order_id}/refund")
async def refund_order(order_id: int, background_tasks: ManagedBackgroundTasks) -> dict[str, str]:
    task_id = background_tasks.add_task(refund, order_id, idempotency_key=f"refund-{order_id}")
    return {"task_id": task_id}
