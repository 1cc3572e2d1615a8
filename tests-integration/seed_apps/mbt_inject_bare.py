"""managed-background-tasks, "Injection patterns": zero-migration, bare BackgroundTasks."""
# ruff: noqa: E402, I001

# --- glue: what the page leaves implicit ---
from typing import Any

from fastapi import FastAPI

from fastapi_taskflow import TaskManager, get_task_context

app = FastAPI()
task_manager = TaskManager()
task_manager.install(app)
calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []


def send_welcome_email(email: str) -> None:
    ctx = get_task_context()
    calls.append(("send_welcome_email", (email,), {"task_id": ctx.task_id if ctx else None}))


# --- end glue ---

# fmt: off
# --- verbatim from managed-background-tasks.txt, section "Injection patterns" ---
from fastapi import BackgroundTasks

@app.post("/signup")
def signup(email: str, background_tasks: BackgroundTasks):
    background_tasks.add_task(send_welcome_email, email)
    # background_tasks is a ManagedBackgroundTasks instance at runtime
# --- end verbatim ---
# fmt: on
