"""The taskflow demo app: enqueue tasks from routes and watch them on the live dashboard.

Run it with ``nox -s demo`` (or ``uvicorn examples.demo:app``) and open
http://127.0.0.1:8000/ in a browser: it opens the dashboard at ``/tasks/dashboard``
(API clients get a JSON index instead; the OpenAPI docs are at ``/docs``). Tasks are
stored in ``taskflow-demo.db`` (SQLite) when taskflow-sql is installed, so they are still
listed after a restart; set ``TASKFLOW_BACKEND`` (e.g. ``memory://`` or
``redis://127.0.0.1:6379/0``) to use another backend with no code change.

The dashboard is open to anyone who reaches the app unless ``TASKFLOW_ADMIN_PASSWORD`` is
set: then it asks for ``admin`` and that password (the built-in login).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import random
import time

from fastapi import BackgroundTasks, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse

from fastapi_taskflow import (
    LoggingObserver,
    ManagedBackgroundTasks,
    QueueConfig,
    QueueFullError,
    TaskManager,
    TaskQuery,
    TaskStatus,
    get_task_context,
    task_log,
)
from fastapi_taskflow.admin import BasicLogin, TaskAdmin


def _default_backend() -> str:
    if importlib.util.find_spec("taskflow_sql") is not None:
        return "sqlite:///taskflow-demo.db"
    return "memory://"


task_manager = TaskManager(
    backend=os.environ.get("TASKFLOW_BACKEND") or _default_backend(),
    observers=[LoggingObserver()],
    queues={"sms": QueueConfig(concurrency=2, max_size=100)},
)
app = FastAPI(title="taskflow demo")
task_manager.install(app)

# --8<-- [start:mount]
# The admin API and the live dashboard under /tasks (mounted before the demo's own
# /tasks routes below, so /tasks/dashboard is the dashboard). A demo shows arguments;
# leave display_args off where they may hold personal data or secrets.
_password = os.environ.get("TASKFLOW_ADMIN_PASSWORD")
admin = TaskAdmin(
    app,
    task_manager,
    title="taskflow demo",
    display_args=True,
    auth=BasicLogin(username="admin", password=_password) if _password else None,
)
# --8<-- [end:mount]


@task_manager.task(retries=3, delay=0.5, backoff=2)
def send_welcome_email(email: str) -> str:
    """Pretend to send an email; the first attempt fails now and then (then a retry)."""
    time.sleep(0.2)
    ctx = get_task_context()
    if ctx is not None and ctx.attempt == 1 and random.random() < 0.3:
        raise ConnectionError("mail server busy")
    task_log("welcome email sent", email=email)
    return f"sent to {email}"


@task_manager.task(retries=2, delay=1)
async def generate_report(user_id: int) -> dict[str, int]:
    """Build a report, logging progress with the task's tags."""
    ctx = get_task_context()
    plan = ctx.tags.get("plan", "free") if ctx else "free"
    for step in range(1, 4):
        await asyncio.sleep(0.3)
        task_log("report step done", step=step, user_id=user_id, plan=plan)
    return {"user_id": user_id, "rows": random.randint(10, 1000)}


@task_manager.task(queue="sms", priority=5)
async def send_otp(phone: str) -> None:
    """Send a one-time password through the 'sms' queue (2 at a time)."""
    await asyncio.sleep(0.1)
    task_log("otp sent", phone=phone[-4:])


@app.get("/", response_model=None)
def index(request: Request) -> dict[str, object] | RedirectResponse:
    """What this demo can do; a browser is sent to the dashboard."""
    if "text/html" in request.headers.get("accept", ""):
        return RedirectResponse("/tasks/dashboard")
    return {
        "dashboard": "/tasks/dashboard",
        "try": [
            "POST /burst?n=20  (a mix of tasks to watch on the dashboard)",
            "POST /signup?email=ada@example.com",
            "POST /report/42?plan=pro",
            "POST /invoice/7/send  (idempotent: same task id every time)",
            "POST /otp?phone=5550100  (priority queue)",
            "GET /tasks?status=success",
            "GET /tasks/{task_id}",
            "GET /stats",
        ],
        "backend": type(task_manager.backend).__name__,
        "docs": "/docs",
    }


@app.post("/signup")
def signup(email: str, background_tasks: BackgroundTasks) -> dict[str, str]:
    """Zero-migration style: a plain BackgroundTasks parameter, now managed."""
    assert isinstance(background_tasks, ManagedBackgroundTasks)
    task_id = background_tasks.add_task(send_welcome_email, email)
    return {"task_id": task_id}


@app.post("/report/{user_id}")
def request_report(
    user_id: int, background_tasks: ManagedBackgroundTasks, plan: str = "free"
) -> dict[str, str]:
    """Enqueue a report with tags that reach every log line."""
    task_id = background_tasks.add_task(
        generate_report, user_id, tags={"user_id": str(user_id), "plan": plan}
    )
    return {"task_id": task_id}


@app.post("/invoice/{invoice_id}/send")
def send_invoice(invoice_id: int, background_tasks: ManagedBackgroundTasks) -> dict[str, str]:
    """Calling this twice returns the same task: the idempotency key holds it."""
    task_id = background_tasks.add_task(
        send_welcome_email,
        f"billing+{invoice_id}@example.com",
        idempotency_key=f"invoice-{invoice_id}",
    )
    return {"task_id": task_id}


@app.post("/otp", response_model=None)
def otp(phone: str, background_tasks: ManagedBackgroundTasks) -> dict[str, str] | JSONResponse:
    """High-priority work through a bounded named queue."""
    try:
        task_id = background_tasks.add_task(send_otp, phone, priority=9)
    except QueueFullError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=429)
    return {"task_id": task_id}


@app.post("/burst")
def burst(
    background_tasks: ManagedBackgroundTasks, n: int = Query(20, ge=1, le=500)
) -> dict[str, int]:
    """Enqueue a mix of tasks: emails (some fail once, then retry), reports and OTPs."""
    enqueued = 0
    for i in range(n):
        kind = random.random()
        if kind < 0.5:
            background_tasks.add_task(send_welcome_email, f"user{i}@example.com")
        elif kind < 0.8:
            user_id = random.randint(1, 99)
            plan = random.choice(["free", "pro"])
            background_tasks.add_task(
                generate_report, user_id, tags={"user_id": str(user_id), "plan": plan}
            )
        else:
            try:
                background_tasks.add_task(send_otp, f"555{random.randint(1000, 9999)}")
            except QueueFullError:
                break
        enqueued += 1
    return {"enqueued": enqueued}


@app.get("/tasks")
async def list_tasks(
    status: TaskStatus | None = None,
    func_name: str | None = None,
    limit: int = Query(20, ge=1, le=200),
    cursor: str | None = None,
) -> dict[str, object]:
    """Newest first, keyset-paginated: pass `next_cursor` back as `cursor`."""
    page = await task_manager.store.aquery(
        TaskQuery(
            statuses=[status] if status else None, func_name=func_name, limit=limit, cursor=cursor
        )
    )
    return {"items": [r.to_dict() for r in page.items], "next_cursor": page.next_cursor}


@app.get("/tasks/{task_id}")
def task_status(task_id: str) -> dict[str, object]:
    """One task, with its logs."""
    record = task_manager.store.get(task_id)
    if record is None:
        raise HTTPException(status_code=404, detail="no such task")
    return record.to_dict()


@app.get("/stats")
async def stats() -> dict[str, object]:
    """Counts by status and by task, computed by the store."""
    return (await task_manager.store.astats()).model_dump(mode="json")
