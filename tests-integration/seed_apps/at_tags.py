"""adding-tasks, "Tags": POST /invoice with tags, and process_invoice reading them."""
# ruff: noqa: B008, E402, I001

# --- glue: what the page leaves implicit ---
from fastapi import Depends, FastAPI

from fastapi_taskflow import TaskManager

app = FastAPI()
task_manager = TaskManager()
# --- end glue ---


# fmt: off
# --- verbatim from adding-tasks.txt, section "Tags" ---
@app.post("/invoice")
def create_invoice(user_id: int, plan: str, tasks=Depends(task_manager.get_tasks)):
    task_id = tasks.add_task(
        process_invoice,
        user_id,
        tags={"user_id": str(user_id), "plan": plan, "source": "api"},
    )
    return {"task_id": task_id}
# --- end verbatim ---
# fmt: on

# fmt: off
# --- verbatim from adding-tasks.txt, section "Tags" ---
from fastapi_taskflow import get_task_context, task_log

@task_manager.task(retries=2)
def process_invoice(user_id: int) -> None:
    ctx = get_task_context()
    plan = ctx.tags.get("plan", "free") if ctx else "free"
    task_log("Processing invoice", user_id=user_id, plan=plan)
# --- end verbatim ---
# fmt: on
