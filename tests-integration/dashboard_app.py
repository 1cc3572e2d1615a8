"""The app the dashboard's browser tests drive: a real TaskAdmin under uvicorn.

Configuration from the environment:

* ``TASKFLOW_BACKEND``: the backend URL (default ``memory://``);
* ``DASHBOARD_HISTORY``: when ``1``, the store is given an hour of finished tasks at
  startup (written as finished records, as an app that ran for an hour would hold), so
  the charts of the screenshots have something to show.
* ``DASHBOARD_DISPLAY_ARGS``: ``0`` to mount the admin without ``display_args``;
* ``DASHBOARD_PASSWORD``: when set, the admin routes need the built-in login
  (``admin`` and this password).

Routes under ``/enqueue/...`` add tasks the way an app's own routes would:

* ``quick`` finishes at once; ``gated`` runs until ``POST /release/{gate}``;
* ``staged`` reports 25 % progress, waits for ``{gate}-half``, reports 75 % and waits
  for ``{gate}``;
* ``single`` runs on a queue of concurrency 1 until its gate opens (the tasks behind it
  stay PENDING, so they can be cancelled);
* ``flaky`` fails its first run and succeeds on the next (retried from the dashboard);
  ``flaky_single`` does the same on the ``single`` queue;
* ``explode`` logs two lines and raises, so its detail has logs and a traceback;
* ``note`` takes any text argument and tags (the XSS test passes markup).
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from fastapi_taskflow import (
    QueueConfig,
    TaskManager,
    TaskRecord,
    TaskStatus,
    get_task_context,
    task_log,
    task_progress,
)
from fastapi_taskflow.admin import BasicLogin, TaskAdmin

task_manager = TaskManager(
    backend=os.environ.get("TASKFLOW_BACKEND") or "memory://",
    queues={"single": QueueConfig(concurrency=1)},
)
GATES: dict[str, asyncio.Event] = {}
FLAKY_SEEN: set[str] = set()


def _gate(name: str) -> asyncio.Event:
    return GATES.setdefault(name, asyncio.Event())


@task_manager.task(name="send_welcome_email")
async def quick(email: str) -> str:
    """Finishes at once."""
    task_log("welcome email sent", email=email)
    return f"sent to {email}"


@task_manager.task(name="generate_report")
async def gated(gate: str, user_id: int) -> dict[str, int]:
    """Runs until the test opens its gate."""
    ctx = get_task_context()
    task_log("report started", user_id=user_id, attempt=ctx.attempt if ctx else 0)
    await _gate(gate).wait()
    task_log("report done", rows=42)
    return {"user_id": user_id, "rows": 42}


@task_manager.task(name="import_catalogue")
async def staged(gate: str) -> None:
    """Reports its progress in two steps, each held until the test opens a gate."""
    task_progress(0.25, "first half")
    await _gate(f"{gate}-half").wait()
    task_progress(0.75, "second half")
    await _gate(gate).wait()


@task_manager.task(name="rebuild_index", queue="single")
async def one_at_a_time(gate: str) -> None:
    """On a queue that runs one task at a time: the next ones wait PENDING."""
    await _gate(gate).wait()


@task_manager.task(name="sync_crm")
def flaky(key: str) -> str:
    """Fails the first time it runs for ``key``, succeeds after (no retries of its own)."""
    if key not in FLAKY_SEEN:
        FLAKY_SEEN.add(key)
        raise ConnectionError(f"CRM unreachable for {key}")
    task_log("synced", key=key)
    return "synced"


@task_manager.task(name="sync_ledger", queue="single")
def flaky_single(key: str) -> str:
    """``flaky`` on the queue of one: a retry of it waits behind a ``single`` task."""
    return flaky(key)


@task_manager.task(name="charge_card", retries=1)
def explode(order: int) -> None:
    """Logs what it is doing, then fails on every attempt."""
    task_log("charging order", order=order)
    task_log("card declined by the gateway", level="warning", code="do_not_honor")
    raise ValueError(f"payment for order {order} declined: do_not_honor")


@task_manager.task(name="store_note")
def note(text: str, fail: bool = False) -> str:
    """Logs the text it was given (the XSS test gives it markup); with ``fail``, raises
    an error whose message is that text."""
    task_log(f"note: {text}", text=text)
    if fail:
        raise RuntimeError(text)
    return text


@task_manager.task(name="<img src=x onerror=alert(1)>.<b>markup</b>")
def marked_up() -> None:
    """A task whose very name is markup (names come from code, but are still data)."""
    task_log("<script>alert(1)</script>")


async def _history() -> None:
    """An hour of finished tasks, written straight to the store as finished records."""
    backend = await task_manager.opened_backend()
    rng = random.Random(11)
    now = datetime.now(timezone.utc)
    funcs = {
        "send_welcome_email": (0.08, 0.25),
        "generate_report": (0.6, 2.4),
        "sync_crm": (0.15, 0.9),
        "charge_card": (0.2, 0.5),
        "resize_image": (0.3, 1.2),
    }
    for minute in range(60, 0, -1):
        load = 6 + int(10 * (1 + math.sin(minute / 7))) + rng.randint(0, 6)
        for _ in range(load):
            func = rng.choice(list(funcs))
            low, high = funcs[func]
            created = now - timedelta(minutes=minute, seconds=rng.uniform(0, 59))
            started = created + timedelta(seconds=rng.uniform(0.01, 0.2))
            finished = started + timedelta(seconds=rng.triangular(low, high * 1.6, low * 1.3))
            failed = rng.random() < (0.12 if func in ("sync_crm", "charge_card") else 0.03)
            record = TaskRecord(
                task_id=uuid.uuid4().hex,
                func_name=func,
                status=TaskStatus.FAILED if failed else TaskStatus.SUCCESS,
                queue="default",
                tags={"tenant": rng.choice(["acme", "globex", "initech"])},
                attempt=1,
                created_at=created,
                updated_at=finished,
                started_at=started,
                finished_at=finished,
                error="ConnectionError: upstream timed out" if failed else None,
            )
            await backend.create(record)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    if os.environ.get("DASHBOARD_HISTORY") == "1":
        await _history()
    yield


app = FastAPI(lifespan=lifespan)
task_manager.install(app)
_password = os.environ.get("DASHBOARD_PASSWORD")
admin = TaskAdmin(
    app,
    task_manager,
    title="taskflow demo",
    display_args=os.environ.get("DASHBOARD_DISPLAY_ARGS", "1") == "1",
    auth=BasicLogin(username="admin", password=_password) if _password else None,
)


@app.get("/")
def index() -> RedirectResponse:
    return RedirectResponse("/tasks/dashboard")


@app.post("/enqueue/quick")
def enqueue_quick(email: str = "ada@example.com", tenant: str = "acme") -> dict[str, str]:
    return {"task_id": task_manager.add_task(quick, email, tags={"tenant": tenant})}


@app.post("/enqueue/gated/{gate}")
def enqueue_gated(gate: str, user_id: int = 7) -> dict[str, str]:
    return {"task_id": task_manager.add_task(gated, gate, user_id, tags={"user_id": str(user_id)})}


@app.post("/enqueue/staged/{gate}")
def enqueue_staged(gate: str) -> dict[str, str]:
    return {"task_id": task_manager.add_task(staged, gate)}


@app.post("/release/{gate}")
def release(gate: str) -> dict[str, bool]:
    _gate(gate).set()
    return {"released": True}


@app.post("/enqueue/single/{gate}")
def enqueue_single(gate: str) -> dict[str, str]:
    return {"task_id": task_manager.add_task(one_at_a_time, gate)}


@app.post("/enqueue/flaky/{key}")
def enqueue_flaky(key: str, batch: str = "") -> dict[str, str]:
    tags = {"tenant": "globex", **({"batch": batch} if batch else {})}
    return {"task_id": task_manager.add_task(flaky, key, tags=tags)}


@app.post("/enqueue/flaky_single/{key}")
def enqueue_flaky_single(key: str) -> dict[str, str]:
    return {"task_id": task_manager.add_task(flaky_single, key)}


@app.post("/enqueue/explode/{order}")
def enqueue_explode(order: int) -> dict[str, str]:
    return {"task_id": task_manager.add_task(explode, order, tags={"order": str(order)})}


@app.post("/enqueue/marked-up")
def enqueue_marked_up() -> dict[str, str]:
    return {"task_id": task_manager.add_task(marked_up)}


@app.post("/enqueue/note")
def enqueue_note(text: str, tag: str = "", fail: bool = False) -> dict[str, str]:
    tags = {"note": tag} if tag else None
    return {"task_id": task_manager.add_task(note, text, fail=fail, tags=tags)}
