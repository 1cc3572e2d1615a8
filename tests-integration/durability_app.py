"""The app the durability tests run as real uvicorn processes (several at once).

Configuration comes from the environment, so every instance of one test shares it:

* ``TASKFLOW_BACKEND``: the shared backend URL;
* ``DURABILITY_RUN_LOG``: a file every execution appends one line to
  (``<event> <label> <instance>``; opened with ``O_APPEND`` and written with one
  ``write`` per line, so concurrent processes never interleave);
* ``DURABILITY_RELEASE``: a path; blocking tasks wait until it exists;
* ``DURABILITY_INSTANCE``: this instance's name in the run log and its instance id;
* ``DURABILITY_LIVENESS_SECONDS``: ``liveness_seconds`` (default 1 s, so recovery takes seconds;
  ``default`` leaves it unset, so the manager's own default applies).

Tasks: ``record`` (runs at once), ``record_requeue`` (the same, re-run if interrupted),
``block`` and ``block_requeue`` (run until the release file appears), ``flaky`` (fails
its first attempt, then succeeds), ``chatty`` (logs a line, then blocks).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

from fastapi import BackgroundTasks, FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.background import BackgroundTask

from fastapi_taskflow import TaskManager, task_log

INSTANCE = os.environ.get("DURABILITY_INSTANCE", f"pid{os.getpid()}")
RUN_LOG = os.environ["DURABILITY_RUN_LOG"]
RELEASE = os.environ.get("DURABILITY_RELEASE", RUN_LOG + ".release")

if os.environ.get("DURABILITY_DEBUG"):
    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("fastapi_taskflow").setLevel(logging.DEBUG)


def _manager() -> TaskManager:
    """The manager, with ``liveness_seconds`` left at its default when asked to."""
    liveness = os.environ.get("DURABILITY_LIVENESS_SECONDS", "1.0")
    options: dict[str, Any] = dict(
        backend=os.environ["TASKFLOW_BACKEND"],
        poll_interval=0.1,
        shutdown_timeout=2.0,
        instance_id=INSTANCE,
    )
    if liveness != "default":
        options["liveness_seconds"] = float(liveness)
    return TaskManager(**options)


task_manager = _manager()
app = FastAPI()
task_manager.install(app)


def note(event: str, label: str) -> None:
    """Append ``<event> <label> <instance>`` to the run log in one write."""
    line = f"{event} {label} {INSTANCE}\n".encode()
    fd = os.open(RUN_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _released() -> bool:
    return os.path.exists(RELEASE)


def _first_attempt(label: str) -> bool:
    """True the first time it is called for ``label``, in any process."""
    try:
        os.close(os.open(f"{RUN_LOG}.{label}.failed", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


async def _wait_for_release() -> None:
    while not _released():
        await asyncio.sleep(0.05)


@task_manager.task(name="durability.record")
async def record(label: str) -> str:
    note("ran", label)
    return label


@task_manager.task(name="durability.record_requeue", requeue_on_interrupt=True)
async def record_requeue(label: str) -> str:
    note("ran", label)
    return label


@task_manager.task(name="durability.block")
async def block(label: str) -> str:
    note("start", label)
    await _wait_for_release()
    note("end", label)
    return label


@task_manager.task(name="durability.block_requeue", requeue_on_interrupt=True)
async def block_requeue(label: str) -> str:
    note("start", label)
    await _wait_for_release()
    note("end", label)
    return label


@task_manager.task(name="durability.flaky", retries=1, delay=0.2)
async def flaky(label: str) -> str:
    note("start", label)
    await _wait_for_release()
    if _first_attempt(label):
        raise RuntimeError(f"first attempt of {label} fails")
    note("end", label)
    return label


@task_manager.task(name="durability.exit")
async def exit_app(label: str) -> None:
    """Calls ``sys.exit()``, as a reused command-line entry point would."""
    note("start", label)
    sys.exit(2)


@task_manager.task(name="durability.chatty")
async def chatty(label: str) -> str:
    """Logs a line, then runs until the release file appears."""
    task_log(f"working on {label}")
    note("start", label)
    await _wait_for_release()
    return label


TASKS: dict[str, Any] = {
    "record": record,
    "record_requeue": record_requeue,
    "block": block,
    "block_requeue": block_requeue,
    "flaky": flaky,
    "exit": exit_app,
    "chatty": chatty,
}


class Item(BaseModel):
    func: str
    label: str
    route: str = "background"  # "background" (Starlette, after the response) or "queued"
    key: str | None = None
    priority: int = 0


class Batch(BaseModel):
    items: list[Item]
    die: bool = False  # SIGKILL this process right after the response is sent


def _add(background_tasks: BackgroundTasks, item: Item) -> str:
    func = TASKS[item.func]
    if item.route == "queued":
        return background_tasks.add_task(  # type: ignore[no-any-return]
            func, item.label, idempotency_key=item.key, priority=item.priority
        )
    return background_tasks.add_task(func, item.label, idempotency_key=item.key)  # type: ignore[func-returns-value]


@app.get("/health")
def health() -> dict[str, Any]:
    return {"instance": INSTANCE, "pid": os.getpid()}


@app.post("/tasks")
def add_tasks(batch: Batch, background_tasks: BackgroundTasks) -> dict[str, Any]:
    """Accept every item (a sync route: keyed adds block on the store, not the loop)."""
    ids = [_add(background_tasks, item) for item in batch.items]
    if batch.die:
        # Runs after the response was sent and before any task of this request starts.
        background_tasks.tasks.insert(0, BackgroundTask(os.kill, os.getpid(), signal.SIGKILL))
    return {"ids": ids, "instance": INSTANCE}


@app.post("/tasks/queued")
def add_queued(item: Item) -> dict[str, Any]:
    """Enqueue without a request's background list (``task_manager.add_task``)."""
    task_id = task_manager.add_task(
        TASKS[item.func], item.label, idempotency_key=item.key, priority=item.priority
    )
    return {"id": task_id, "instance": INSTANCE}


@app.get("/status/{task_id}")
def status(task_id: str) -> dict[str, Any]:
    found = task_manager.store.get(task_id)
    if found is None:
        raise HTTPException(404, f"no task {task_id}")
    return found.model_dump(mode="json", exclude={"logs"})


@app.get("/logs/{task_id}")
def logs(task_id: str) -> list[str]:
    """The messages of the task's stored log lines, oldest first."""
    found = task_manager.store.get(task_id)
    if found is None:
        raise HTTPException(404, f"no task {task_id}")
    return [entry.message for entry in found.logs]


class Ids(BaseModel):
    ids: list[str]


@app.post("/statuses")
def statuses(body: Ids) -> dict[str, str | None]:
    """``{task_id: status or None}`` read through ``task_manager.store.get``."""
    out: dict[str, str | None] = {}
    for task_id in body.ids:
        found = task_manager.store.get(task_id)
        out[task_id] = found.status.value if found is not None else None
    return out


@app.get("/stats")
def stats() -> dict[str, Any]:
    return task_manager.store.stats().model_dump(mode="json")


@app.get("/events")
async def events(request: Request) -> StreamingResponse:
    """Server-sent events: every instance's task events, as seen by this instance."""

    async def stream() -> AsyncIterator[str]:
        async with task_manager.events() as feed:
            yield ": ready\n\n"
            async for event in feed:
                yield f"data: {json.dumps(event.model_dump(mode='json'))}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")
