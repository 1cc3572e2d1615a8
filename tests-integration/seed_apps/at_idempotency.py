"""adding-tasks, "Idempotency keys": POST /invoice/{invoice_id}/send."""
# ruff: noqa: B008

# --- glue: what the page leaves implicit ---
from typing import Any

from fastapi import Depends, FastAPI

from fastapi_taskflow import TaskManager

app = FastAPI()
task_manager = TaskManager()
calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
FAILING_INVOICES: set[int] = set()  # tests put an id here to make its task fail


@task_manager.task(retries=0)
def email_invoice(invoice_id: int) -> None:
    calls.append(("email_invoice", (invoice_id,), {}))
    if invoice_id in FAILING_INVOICES:
        raise RuntimeError(f"mail server refused invoice {invoice_id}")


# --- end glue ---


# fmt: off
# --- verbatim from adding-tasks.txt, section "Idempotency keys" ---
@app.post("/invoice/{invoice_id}/send")
def send_invoice(invoice_id: int, tasks=Depends(task_manager.get_tasks)):
    task_id = tasks.add_task(
        email_invoice,
        invoice_id,
        idempotency_key=f"invoice-{invoice_id}",
    )
    return {"task_id": task_id}
# --- end verbatim ---
# fmt: on
