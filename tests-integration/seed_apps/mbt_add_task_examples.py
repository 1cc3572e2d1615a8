"""managed-background-tasks, "Methods" examples: each add_task() example in its own route.

Injection: ``task_manager.install(app)`` and a ``ManagedBackgroundTasks`` parameter named
``background_tasks``, as the examples assume. The default queue runs one task at a time
so tests can watch priorities order the queue.
"""

# --- glue: what the page leaves implicit ---
import asyncio
import threading
import time
from collections import defaultdict
from typing import Any

from fastapi import FastAPI

from fastapi_taskflow import (
    ManagedBackgroundTasks,
    QueueConfig,
    TaskManager,
    get_task_context,
    task_log,
)

app = FastAPI()
task_manager = TaskManager(queues={"default": QueueConfig(concurrency=1)})
task_manager.install(app)

calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
NOTIFY_STARTED: defaultdict[int, threading.Event] = defaultdict(threading.Event)
RELEASE_BLOCKER = threading.Event()


def _ctx_tags() -> dict[str, str] | None:
    ctx = get_task_context()
    return dict(ctx.tags) if ctx else None


def send_email(address: str) -> None:
    calls.append(("send_email", (), {"address": address}))


def send_otp(phone: str) -> None:
    calls.append(("send_otp", (phone,), {}))


async def notify(user_id: int) -> None:
    calls.append(("notify", (user_id,), {}))
    NOTIFY_STARTED[user_id].set()


def generate_invoice(order_id: int) -> None:
    calls.append(("generate_invoice", (order_id,), {}))


def process_payment(amount: float) -> None:
    calls.append(("process_payment", (amount,), {"tags": _ctx_tags()}))
    task_log("charged", amount=amount)


def blocker() -> None:
    """Holds the default queue's only slot until a test sets RELEASE_BLOCKER."""
    calls.append(("blocker", (), {}))
    RELEASE_BLOCKER.wait(10)


async def _started_async(user_id: int, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not NOTIFY_STARTED[user_id].is_set():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


@app.post("/_glue/blocker")
def glue_blocker(background_tasks: ManagedBackgroundTasks) -> dict[str, str]:
    return {"task_id": background_tasks.add_task(blocker, priority=1)}


@app.post("/_glue/otp-low")
def glue_otp_low(phone: str, background_tasks: ManagedBackgroundTasks) -> dict[str, str]:
    return {"task_id": background_tasks.add_task(send_otp, phone, priority=2)}


@app.post("/_glue/notify-eager-priority/{user_id}")
def glue_notify_eager_priority(
    user_id: int, background_tasks: ManagedBackgroundTasks
) -> dict[str, Any]:
    task_id = background_tasks.add_task(notify, user_id, eager=True, priority=5)
    return {"task_id": task_id, "after_response": len(background_tasks.tasks)}


@app.post("/email")
def basic(email: str, background_tasks: ManagedBackgroundTasks) -> dict[str, Any]:
    # --- end glue ---
    # fmt: off
    # --- verbatim from managed-background-tasks.txt, section "Methods" ---
    # Basic enqueue
    task_id = background_tasks.add_task(send_email, address=email)
    # --- end verbatim ---
    # fmt: on
    return {"task_id": task_id}  # glue


@app.post("/otp")
def with_priority(phone: str, background_tasks: ManagedBackgroundTasks) -> dict[str, Any]:
    # fmt: off
    # --- verbatim from managed-background-tasks.txt, section "Methods" ---
    # With priority (runs before lower-priority tasks)
    task_id = background_tasks.add_task(send_otp, phone, priority=9)
    # --- end verbatim ---
    # fmt: on
    return {"task_id": task_id, "after_response": len(background_tasks.tasks)}  # glue


@app.post("/notify/{user_id}")
def eager_sync_route(user_id: int, background_tasks: ManagedBackgroundTasks) -> dict[str, Any]:
    # fmt: off
    # --- verbatim from managed-background-tasks.txt, section "Methods" ---
    # Eager dispatch (starts before the response is sent)
    task_id = background_tasks.add_task(notify, user_id, eager=True)
    # --- end verbatim ---
    # fmt: on
    started = NOTIFY_STARTED[user_id].wait(3)  # glue: the route waits for the task
    return {"task_id": task_id, "started_before_response": started}  # glue


@app.post("/notify-async/{user_id}")
async def eager_async_route(
    user_id: int, background_tasks: ManagedBackgroundTasks
) -> dict[str, Any]:
    # fmt: off
    # --- verbatim from managed-background-tasks.txt, section "Methods" ---
    # Eager dispatch (starts before the response is sent)
    task_id = background_tasks.add_task(notify, user_id, eager=True)
    # --- end verbatim ---
    # fmt: on
    started = await _started_async(user_id)  # glue: the route waits for the task
    return {"task_id": task_id, "started_before_response": started}  # glue


@app.post("/orders/{order_id}/invoice")
def with_dedup(order_id: int, background_tasks: ManagedBackgroundTasks) -> dict[str, Any]:
    # fmt: off
    # --- verbatim from managed-background-tasks.txt, section "Methods" ---
    # With deduplication
    task_id = background_tasks.add_task(
        generate_invoice,
        order_id,
        idempotency_key=f"invoice:{order_id}",
    )
    # --- end verbatim ---
    # fmt: on
    return {"task_id": task_id}  # glue


@app.post("/payments")
def with_tags(
    amount: float, customer_id: int, background_tasks: ManagedBackgroundTasks
) -> dict[str, Any]:
    # fmt: off
    # --- verbatim from managed-background-tasks.txt, section "Methods" ---
    # With tags for observability
    task_id = background_tasks.add_task(
        process_payment,
        amount,
        tags={"customer_id": str(customer_id), "plan": "pro"},
    )
    # --- end verbatim ---
    # fmt: on
    return {"task_id": task_id}  # glue
