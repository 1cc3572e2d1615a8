"""Retries with a delay and exponential backoff.

``charge_card`` fails twice (the gateway is "down") and then succeeds. While it waits
for a retry its record is PENDING again, with the attempts made so far and the last
error; other tasks keep running meanwhile.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager

task_manager = TaskManager()
app = FastAPI()
task_manager.install(app)


class Gateway:
    """A payment gateway that fails the first ``failures`` calls for each order."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: dict[int, int] = {}

    def charge(self, order_id: int) -> str:
        self.calls[order_id] = self.calls.get(order_id, 0) + 1
        if self.calls[order_id] <= self.failures:
            raise ConnectionError("gateway unavailable")
        return f"receipt-{order_id}"


gateway = Gateway(failures=2)


# Attempt 1 fails -> wait 0.2s -> attempt 2 fails -> wait 0.4s -> attempt 3 succeeds.
@task_manager.task(retries=3, delay=0.2, backoff=2.0)
def charge_card(order_id: int) -> str:
    return gateway.charge(order_id)


# A long wait between attempts holds no worker: the retry sits in the queue.
@task_manager.task(retries=1, delay=3600)
def sync_crm(account_id: int) -> None:
    raise ConnectionError("CRM is down")


# Retry what may pass (the gateway down, a timeout), not what will fail again: a
# refused card is FAILED after its first attempt. The waits grow 1s, 4s, 16s, then stay
# at 30s (max_delay) for the retries after; jitter=1 draws each one at random between
# 0 and that, so refunds that failed together do not all come back at once.
@task_manager.task(
    retries=8,
    delay=1,
    backoff=4,
    max_delay=30,
    jitter=1,
    retry_on=(ConnectionError, TimeoutError),
)
def refund(order_id: int) -> str:
    if order_id < 0:
        raise ValueError(f"no order {order_id}: nothing to refund")
    return gateway.charge(order_id)


def audit(order_id: int) -> None:
    """Not registered: runs once, no retries."""
    raise RuntimeError(f"audit of order {order_id} failed")


@app.post("/orders/{order_id}/charge")
def charge(order_id: int, background_tasks: ManagedBackgroundTasks) -> dict[str, str]:
    return {"task_id": background_tasks.add_task(charge_card, order_id)}


@app.post("/accounts/{account_id}/sync")
def sync(account_id: int, background_tasks: ManagedBackgroundTasks) -> dict[str, str]:
    return {"task_id": background_tasks.add_task(sync_crm, account_id)}


@app.post("/orders/{order_id}/refund")
def start_refund(order_id: int, background_tasks: ManagedBackgroundTasks) -> dict[str, str]:
    return {"task_id": background_tasks.add_task(refund, order_id)}


@app.post("/orders/{order_id}/audit")
def start_audit(order_id: int, background_tasks: ManagedBackgroundTasks) -> dict[str, str]:
    return {"task_id": background_tasks.add_task(audit, order_id)}


@app.get("/tasks/{task_id}")
def task_status(task_id: str) -> dict[str, Any]:
    record = task_manager.store.get(task_id)
    if record is None:
        raise HTTPException(status_code=404)
    return {
        "status": record.status,
        "attempt": record.attempt,
        "max_retries": record.max_retries,
        "error": record.error,
        "result": record.result,
    }
