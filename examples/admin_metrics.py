"""Prometheus metrics at /tasks/metrics, guarded by your own FastAPI dependency.

A scraper sends ``Authorization: Bearer <token>``; the same dependency guards the whole
admin (API, dashboard, event stream, metrics).
"""

from __future__ import annotations

import hmac
import os

from fastapi import FastAPI, Header, HTTPException

from fastapi_taskflow import ManagedBackgroundTasks, QueueConfig, TaskManager
from fastapi_taskflow.admin import TaskAdmin

SCRAPE_TOKEN = os.environ.get("TASKFLOW_SCRAPE_TOKEN", "scrape-token")


# --8<-- [start:auth]
async def require_token(authorization: str = Header(default="")) -> None:
    """Any FastAPI dependency can guard the admin: raise HTTPException to refuse."""
    expected = f"Bearer {SCRAPE_TOKEN}"
    if not hmac.compare_digest(authorization.encode(), expected.encode()):
        raise HTTPException(status_code=401, detail="a valid bearer token is required")


task_manager = TaskManager(queues={"emails": QueueConfig(concurrency=4, max_size=1000)})
app = FastAPI()
task_manager.install(app)
TaskAdmin(app, task_manager, auth=require_token)
# --8<-- [end:auth]


@task_manager.task(name="mail.send", queue="emails", retries=2)
async def send(address: str) -> None:
    if address.endswith(".invalid"):
        raise ValueError(f"undeliverable: {address}")


@app.post("/mail")
async def mail(address: str, background_tasks: ManagedBackgroundTasks) -> dict[str, str]:
    return {"task_id": background_tasks.add_task(send, address)}
