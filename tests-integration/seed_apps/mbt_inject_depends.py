"""managed-background-tasks, "Injection patterns": explicit dependency."""
# ruff: noqa: B008, E402, I001

# --- glue: what the page leaves implicit ---
from typing import Any

from fastapi import FastAPI

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager, get_task_context

app = FastAPI()
task_manager = TaskManager()
calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []


def send_welcome_email(email: str) -> None:
    ctx = get_task_context()
    calls.append(("send_welcome_email", (email,), {"task_id": ctx.task_id if ctx else None}))


# --- end glue ---

# fmt: off
# --- verbatim from managed-background-tasks.txt, section "Injection patterns" ---
from fastapi import Depends

@app.post("/signup")
def signup(
    email: str,
    tasks: ManagedBackgroundTasks = Depends(task_manager.get_tasks),
):
    task_id = tasks.add_task(send_welcome_email, email)
    return {"task_id": task_id}
# --- end verbatim ---
# fmt: on
