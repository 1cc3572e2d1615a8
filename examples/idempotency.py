"""Idempotency keys: the same logical operation is enqueued once.

A second ``add_task()`` with a key held by a task that has not FAILED (or been
REJECTED) returns the first task's id and enqueues nothing.
"""

from __future__ import annotations

from fastapi import FastAPI

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager

task_manager = TaskManager()
app = FastAPI()
task_manager.install(app)

emailed: list[int] = []
exports: list[int] = []


@task_manager.task()
def email_invoice(invoice_id: int) -> None:
    emailed.append(invoice_id)


@task_manager.task()
async def export_ledger(month: int) -> None:
    exports.append(month)
    if len(exports) == 1:
        raise RuntimeError("the ledger service timed out")


@app.post("/invoice/{invoice_id}/send")
def send_invoice(invoice_id: int, background_tasks: ManagedBackgroundTasks) -> dict[str, str]:
    task_id = background_tasks.add_task(
        email_invoice, invoice_id, idempotency_key=f"invoice-{invoice_id}"
    )
    return {"task_id": task_id}


@app.post("/ledger/{month}/export")
async def export(month: int, background_tasks: ManagedBackgroundTasks) -> dict[str, str]:
    # A keyed add_task() makes one blocking store call (see the page): cheap on the
    # in-process backend, a network round trip on a shared one.
    task_id = background_tasks.add_task(export_ledger, month, idempotency_key=f"ledger-{month}")
    return {"task_id": task_id}
