"""adding-tasks, "Storing the task ID": POST /report and GET /report/{task_id}."""
# ruff: noqa: B008

# --- glue: what the page leaves implicit ---
from typing import Any

from fastapi import Depends, FastAPI, HTTPException

from fastapi_taskflow import TaskManager

app = FastAPI()
task_manager = TaskManager()
calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []


def generate_report(user_id: int) -> dict[str, Any]:
    calls.append(("generate_report", (user_id,), {}))
    return {"user_id": user_id, "rows": 3}


@app.get("/_glue/calls")
def glue_calls() -> list[Any]:
    return [list(call) for call in calls]


# --- end glue ---


# fmt: off
# --- verbatim from adding-tasks.txt, section "Storing the task ID" ---
@app.post("/report")
def request_report(user_id: int, tasks=Depends(task_manager.get_tasks)):
    task_id = tasks.add_task(generate_report, user_id)
    return {"task_id": task_id}

@app.get("/report/{task_id}")
def report_status(task_id: str):
    record = task_manager.store.get(task_id)
    if record is None:
        raise HTTPException(status_code=404)
    return record.to_dict()
# --- end verbatim ---
# fmt: on
