"""managed-background-tasks, "Direct construction for testing": no app, no request."""
# ruff: noqa: E402

# --- glue: what the page leaves implicit ---
from typing import Any

calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []


def my_func(value: str) -> str:
    calls.append(("my_func", (value,), {}))
    return value.upper()


arg = "hello"
# --- end glue ---

# fmt: off
# --- verbatim from managed-background-tasks.txt, section "Direct construction for testing" ---
from fastapi_taskflow import ManagedBackgroundTasks, TaskManager

tm = TaskManager()
managed = ManagedBackgroundTasks(tm)
task_id = managed.add_task(my_func, arg)
# --- end verbatim ---
# fmt: on
