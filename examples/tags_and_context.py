"""Tags, the task context and structured task logs.

``export_invoices`` runs for seconds: its lines so far can be read while it runs
(``GET /tasks/{id}/logs``), as they are written every second, not only at its end.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, HTTPException

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager, get_task_context, task_log

task_manager = TaskManager()
app = FastAPI()
task_manager.install(app)


def price_for(plan: str) -> int:
    task_log("looking up price", level="debug", plan=plan)  # works in helpers too
    return {"free": 0, "pro": 20}.get(plan, 0)


@task_manager.task(retries=2)
def process_invoice(user_id: int) -> dict[str, Any]:
    ctx = get_task_context()  # None when called outside a task
    plan = ctx.tags.get("plan", "free") if ctx else "free"
    task_log("processing invoice", user_id=user_id, plan=plan)
    amount = price_for(plan)
    if amount == 0:
        task_log("nothing to charge", level="warning", user_id=user_id)
    return {
        "task_id": ctx.task_id if ctx else None,
        "func_name": ctx.func_name if ctx else None,
        "attempt": ctx.attempt if ctx else None,
        "amount": amount,
    }


@task_manager.task()
async def export_invoices(batches: int) -> int:
    for batch in range(1, batches + 1):
        await asyncio.sleep(0.5)  # export one batch
        task_log("exported batch", batch=batch, of=batches)
    return batches


@app.post("/exports")
def start_export(background_tasks: ManagedBackgroundTasks, batches: int = 6) -> dict[str, str]:
    return {"task_id": background_tasks.add_task(export_invoices, batches)}


@app.post("/invoice")
def create_invoice(
    user_id: int, plan: str, background_tasks: ManagedBackgroundTasks
) -> dict[str, str]:
    task_id = background_tasks.add_task(
        process_invoice,
        user_id,
        tags={"user_id": str(user_id), "plan": plan, "source": "api"},
    )
    return {"task_id": task_id}


@app.get("/tasks/{task_id}/logs")
def task_logs(task_id: str) -> list[dict[str, Any]]:
    record = task_manager.store.get(task_id)
    if record is None:
        raise HTTPException(status_code=404)
    return [
        {"level": e.level, "message": e.message, "attempt": e.attempt, **e.extra}
        for e in record.logs
    ]
