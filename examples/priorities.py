"""Priorities and named queues.

``priority=`` sends a task through its queue's priority heap: higher numbers run first,
tasks of equal priority in the order they were added. Tasks registered with ``queue=``
always run on that queue, with its concurrency cap and size limit.
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException

from fastapi_taskflow import ManagedBackgroundTasks, QueueConfig, QueueFullError, TaskManager

task_manager = TaskManager(
    queues={
        "default": QueueConfig(concurrency=1),  # one at a time: priority decides the order
        "reports": QueueConfig(concurrency=1, max_size=2),
    }
)
app = FastAPI()
task_manager.install(app)

delivered: list[str] = []
reports: list[int] = []


@task_manager.task()
async def deliver(message: str) -> None:
    delivered.append(message)


@task_manager.task(priority=9)  # every call is prioritised, unless add_task says otherwise
async def send_otp(phone: str) -> None:
    delivered.append(f"otp:{phone}")


@task_manager.task(queue="reports")
async def build_report(report_id: int) -> None:
    reports.append(report_id)


@app.post("/messages")
def post_message(
    message: str, priority: int, background_tasks: ManagedBackgroundTasks
) -> dict[str, str]:
    return {"task_id": background_tasks.add_task(deliver, message, priority=priority)}


@app.post("/otp")
def post_otp(phone: str, background_tasks: ManagedBackgroundTasks) -> dict[str, str]:
    return {"task_id": background_tasks.add_task(send_otp, phone)}


@app.post("/reports/{report_id}")
def post_report(report_id: int, background_tasks: ManagedBackgroundTasks) -> dict[str, str]:
    try:
        task_id = background_tasks.add_task(build_report, report_id)
    except QueueFullError as exc:
        # The refused task is recorded as REJECTED; tell the client to come back later.
        raise HTTPException(
            status_code=429,
            detail={"error": str(exc), "task_id": exc.task_id},
            headers={"Retry-After": "30"},
        ) from exc
    return {"task_id": task_id}
