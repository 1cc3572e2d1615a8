"""Observers: receive every task's lifecycle and log events.

``TaskCounter`` is a custom observer; ``BrokenObserver`` raises on every event to show
that a failing observer never breaks a task.
"""

from __future__ import annotations

import logging
from collections import Counter

from fastapi import FastAPI

from fastapi_taskflow import (
    BaseObserver,
    LifecycleEvent,
    LogEvent,
    LoggingObserver,
    ManagedBackgroundTasks,
    MemoryObserver,
    TaskManager,
    task_log,
)


class TaskCounter(BaseObserver):
    """Counts status changes per task name, and warning-or-worse log lines."""

    def __init__(self) -> None:
        self.statuses: Counter[tuple[str, str]] = Counter()
        self.warnings = 0

    async def on_lifecycle(self, event: LifecycleEvent) -> None:
        self.statuses[(event.func_name, event.status.value)] += 1

    async def on_log(self, event: LogEvent) -> None:
        if event.level in ("warning", "error", "critical"):
            self.warnings += 1


class BrokenObserver(BaseObserver):
    async def on_lifecycle(self, event: LifecycleEvent) -> None:
        raise RuntimeError("metrics endpoint unreachable")


counter = TaskCounter()
memory = MemoryObserver()
task_manager = TaskManager(
    observers=[
        BrokenObserver(),  # logged through the "fastapi_taskflow" logger and skipped
        counter,
        memory,
        LoggingObserver(logging.getLogger("myapp.tasks")),
    ]
)
app = FastAPI()
task_manager.install(app)


@task_manager.task(name="reports.build")
def build_report(report_id: int) -> None:
    task_log("building report", report_id=report_id)
    task_log("report is large", level="warning", rows=120_000)


@app.post("/reports/{report_id}")
def request_report(report_id: int, background_tasks: ManagedBackgroundTasks) -> dict[str, str]:
    task_id = background_tasks.add_task(build_report, report_id, tags={"report_id": str(report_id)})
    return {"task_id": task_id}
