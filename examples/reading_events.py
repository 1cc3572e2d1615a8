"""Every instance's task events, read by a program of your own (no task manager).

An app instance publishes its tasks' events only while a reader is announced in the
store. ``watch_store`` is such a reader: it announces itself with ``announced_reader``,
subscribes to the store's fan-out, and prints each task's status changes until
``stop`` says it has seen enough. Run it beside an app on the same store (``python
examples/reading_events.py sqlite:///tasks.db``); ``taskflow watch`` does the same.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

from fastapi import BackgroundTasks, FastAPI

from fastapi_taskflow import LifecycleEvent, TaskManager
from fastapi_taskflow.backends import open_backend
from fastapi_taskflow.fanout import announced_reader

STORE = "sqlite:///tasks.db"

# -- the app: any instance on the store ---------------------------------------------


async def build_report(report_id: int) -> str:
    return f"report {report_id}"


def build_app(url: str = STORE) -> tuple[TaskManager, FastAPI]:
    """An app instance on the store ``url``: ``POST /reports/{id}`` adds a task."""
    task_manager = TaskManager(backend=url)
    app = FastAPI()
    task_manager.install(app)
    job = task_manager.task(name="reports.build")(build_report)

    @app.post("/reports/{report_id}")
    async def create_report(report_id: int, background_tasks: BackgroundTasks) -> dict[str, str]:
        return {"task_id": background_tasks.add_task(job, report_id)}

    return task_manager, app


# -- the reader: a script, a sidecar, a notifier ------------------------------------


# --8<-- [start:reader]
async def watch_store(
    url: str,
    stop: Callable[[list[LifecycleEvent]], bool] = lambda seen: False,
) -> list[LifecycleEvent]:
    """Print every task's status changes on the store ``url`` until ``stop(seen)``;
    return what was seen."""
    backend = open_backend(url)
    await backend.open()
    seen: list[LifecycleEvent] = []
    try:
        async with announced_reader(backend), backend.subscribe() as events:
            async for event in events:
                if isinstance(event, LifecycleEvent):
                    seen.append(event)
                    print(f"{event.task_id} {event.func_name}: {event.status.value}")
                    if stop(seen):
                        break
    finally:
        await backend.close()
    return seen


# --8<-- [end:reader]


if __name__ == "__main__":
    asyncio.run(watch_store(sys.argv[1] if len(sys.argv) > 1 else STORE))
