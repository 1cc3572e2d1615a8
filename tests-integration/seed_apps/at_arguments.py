"""adding-tasks, "Positional and keyword arguments": the three calls, inside a route."""
# ruff: noqa: B008

# --- glue: what the page leaves implicit ---
from typing import Any

from fastapi import Depends, FastAPI

from fastapi_taskflow import TaskManager

app = FastAPI()
task_manager = TaskManager()
calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []


def send_email(address: str) -> None:
    calls.append(("send_email", (address,), {}))


def resize_image(image_id: int, width: int = 0, height: int = 0) -> None:
    calls.append(("resize_image", (image_id,), {"width": width, "height": height}))


@app.post("/images/{image_id}")
def enqueue_examples(image_id: int, tasks=Depends(task_manager.get_tasks)):
    # --- end glue ---
    # fmt: off
    # --- verbatim from adding-tasks.txt, section "Positional and keyword arguments" ---
    tasks.add_task(send_email, "user@example.com")                 # positional
    tasks.add_task(send_email, address="user@example.com")         # keyword
    tasks.add_task(resize_image, image_id, width=800, height=600)  # mixed
    # --- end verbatim ---
    # fmt: on
    return {"queued": len(tasks.tasks)}  # glue
