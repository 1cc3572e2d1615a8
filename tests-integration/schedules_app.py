"""The app the schedule, timeout and cancellation tests run as several real processes.

Configuration from the environment (shared by every instance of one test):

* ``TASKFLOW_BACKEND``: the shared backend URL;
* ``DURABILITY_RUN_LOG``: a file each execution step appends one line to
  (``<event> <label> <instance> <unix time>``, one ``write`` per line);
* ``DURABILITY_INSTANCE``: this instance's name (also its instance id);
* ``SCHEDULES_PERIODIC``: ``1`` to run the ``every=1 s`` schedule ``schedules.tick``;
* ``SCHEDULES_SLOW``: ``1`` to run ``schedules.slow``, ``every=1 s`` with
  ``overlap=False``, whose firings take 2.5 s.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from fastapi import BackgroundTasks, FastAPI, HTTPException
from pydantic import BaseModel

from fastapi_taskflow import TaskManager, TaskStatus, get_task_context

INSTANCE = os.environ.get("DURABILITY_INSTANCE", f"pid{os.getpid()}")
RUN_LOG = os.environ["DURABILITY_RUN_LOG"]

task_manager = TaskManager(
    backend=os.environ["TASKFLOW_BACKEND"],
    liveness_seconds=1.0,
    poll_interval=0.1,
    shutdown_timeout=2.0,
    instance_id=INSTANCE,
)
app = FastAPI()
task_manager.install(app)


def note(event: str, label: str) -> None:
    """Append ``<event> <label> <instance> <time>`` to the run log in one write."""
    line = f"{event} {label} {INSTANCE} {time.time():.6f}\n".encode()
    fd = os.open(RUN_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


if os.environ.get("SCHEDULES_PERIODIC") == "1":

    @task_manager.schedule(every=timedelta(seconds=1), name="schedules.tick")
    async def tick() -> None:
        ctx = get_task_context()
        assert ctx is not None
        note("tick", ctx.tags["taskflow.tick"])


if os.environ.get("SCHEDULES_SLOW") == "1":

    @task_manager.schedule(every=timedelta(seconds=1), overlap=False, name="schedules.slow")
    async def slow() -> None:
        ctx = get_task_context()
        assert ctx is not None
        note("slow-start", ctx.tags["taskflow.tick"])
        await asyncio.sleep(2.5)
        note("slow-end", ctx.tags["taskflow.tick"])


@task_manager.task(name="schedules.record")
async def record(label: str) -> str:
    note("ran", label)
    return label


@task_manager.task(name="schedules.long")
async def long(label: str) -> None:
    note("start", label)
    try:
        for _ in range(600):
            await asyncio.sleep(0.1)
            note("step", label)
        note("end", label)
    finally:
        note("stopped", label)  # also when cancelled: the loop was left


@task_manager.task(name="schedules.hang", timeout=1)
async def hang(label: str) -> None:
    note("start", label)
    await asyncio.sleep(3600)


class Firing(BaseModel):
    label: str
    delay: float | None = None
    run_at: datetime | None = None
    run_key: str | None = None


class Firings(BaseModel):
    items: list[Firing]


@app.get("/health")
def health() -> dict[str, Any]:
    return {"instance": INSTANCE, "pid": os.getpid()}


@app.post("/schedule_once")
async def schedule_once(body: Firings) -> dict[str, Any]:
    ids = []
    for item in body.items:
        ids.append(
            await task_manager.schedule_once(
                record, item.label, delay=item.delay, run_at=item.run_at, run_key=item.run_key
            )
        )
    return {"ids": ids, "instance": INSTANCE}


@app.post("/cancel_scheduled/{run_key}")
async def cancel_scheduled(run_key: str) -> dict[str, Any]:
    return {"cancelled": await task_manager.cancel_scheduled(run_key)}


@app.get("/scheduled")
async def scheduled() -> list[dict[str, Any]]:
    return [s.model_dump(mode="json") for s in await task_manager.list_scheduled()]


@app.post("/cancel/{task_id}")
async def cancel(task_id: str) -> dict[str, Any]:
    found = await task_manager.cancel(task_id)
    return found.model_dump(mode="json", exclude={"logs"})


@app.post("/long/{label}")
def start_long(label: str, background_tasks: BackgroundTasks) -> dict[str, Any]:
    """A long task that runs on this instance (after the response)."""
    return {"id": background_tasks.add_task(long, label), "instance": INSTANCE}


@app.post("/hang/{label}")
def start_hang(label: str, background_tasks: BackgroundTasks) -> dict[str, Any]:
    return {"id": background_tasks.add_task(hang, label), "instance": INSTANCE}


@app.get("/status/{task_id}")
async def status(task_id: str) -> dict[str, Any]:
    found = await task_manager.store.aget(task_id)
    if found is None:
        raise HTTPException(404, f"no task {task_id}")
    return found.model_dump(mode="json", exclude={"logs"})


class Ids(BaseModel):
    ids: list[str]


@app.post("/statuses")
async def statuses(body: Ids) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for task_id in body.ids:
        found = await task_manager.store.aget(task_id)
        out[task_id] = found.status.value if found is not None else None
    return out


@app.get("/now")
def now() -> dict[str, str]:
    return {"now": datetime.now(timezone.utc).isoformat(), "pending": TaskStatus.PENDING.value}
