"""adding-tasks, "Basic usage": the /signup route with Depends(task_manager.get_tasks)."""
# ruff: noqa: B008

# --- glue: what the page leaves implicit ---
from typing import Any

from fastapi import Depends, FastAPI

from fastapi_taskflow import TaskManager, get_task_context

app = FastAPI()
task_manager = TaskManager()
calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []


def send_email(address: str) -> None:
    ctx = get_task_context()
    calls.append(("send_email", (address,), {"task_id": ctx.task_id if ctx else None}))


# --- end glue ---


# fmt: off
# --- verbatim from adding-tasks.txt, section "Basic usage" ---
@app.post("/signup")
def signup(email: str, tasks=Depends(task_manager.get_tasks)):
    task_id = tasks.add_task(send_email, email)
    return {"task_id": task_id}
# --- end verbatim ---
# fmt: on
