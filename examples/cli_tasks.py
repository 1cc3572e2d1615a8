"""Fill a shared store with tasks to try the ``taskflow`` command line on.

    python examples/cli_tasks.py sqlite:///tasks.db

Runs a task manager on the backend URL given (``sqlite:///tasks.db`` by default; a
``redis://`` or ``postgresql://`` URL works the same) until its tasks have settled, then
exits:
three e-mails sent (with log lines and tags), a card charge that FAILED (to retry), and an
inventory sync whose first attempt failed and whose retry waits an hour (PENDING: to
cancel). The store outlives the process, so ``taskflow --backend sqlite:///tasks.db ...``
in another shell sees every task.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

from fastapi_taskflow import TaskManager, TaskStatus, task_log


def build(url: str) -> tuple[TaskManager, dict[str, Callable[..., Any]]]:
    """A task manager on the backend ``url``, and the example's three tasks."""
    task_manager = TaskManager(backend=url, poll_interval=0.1)

    @task_manager.task(name="send_email")
    async def send_email(to: str, subject: str) -> str:
        task_log(f"rendering {subject!r}")
        task_log(f"sent to {to}")
        return f"sent {subject!r} to {to}"

    @task_manager.task(name="charge_card")
    def charge_card(order_id: int, amount_cents: int) -> None:
        raise RuntimeError(f"card declined for order {order_id}")

    @task_manager.task(name="sync_inventory", retries=2, delay=3600)
    def sync_inventory(warehouse: str) -> None:
        raise ConnectionError(f"warehouse {warehouse} did not answer")

    return task_manager, {
        "send_email": send_email,
        "charge_card": charge_card,
        "sync_inventory": sync_inventory,
    }


async def fill(url: str) -> dict[str, str]:
    """Add the tasks, wait until each has settled, and return ``{name: task_id}``."""
    task_manager, tasks = build(url)
    ids: dict[str, str] = {}
    async with task_manager:
        for n, to in enumerate(["ada@example.com", "alan@example.com", "grace@example.com"]):
            ids[f"email{n}"] = task_manager.add_task(
                tasks["send_email"],
                to,
                subject="Your receipt",
                tags={"customer": to.split("@")[0]},
            )
        ids["charge"] = task_manager.add_task(
            tasks["charge_card"],
            1042,
            amount_cents=1999,
            tags={"order": "1042"},
        )
        ids["sync"] = task_manager.add_task(
            tasks["sync_inventory"],
            "east",
        )
        await settle(task_manager, ids)
    return ids


async def settle(task_manager: TaskManager, ids: dict[str, str], timeout: float = 30) -> None:
    """Wait until every task is finished, or (sync) waiting for its retry."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        settled = 0
        for task_id in ids.values():
            record = await task_manager.store.aget(task_id)
            waiting_retry = (
                record is not None and record.status is TaskStatus.PENDING and record.attempt > 0
            )
            if record is not None and (record.status.is_terminal or waiting_retry):
                settled += 1
        if settled == len(ids):
            return
        if loop.time() > deadline:
            raise TimeoutError("the example's tasks did not settle in time")
        await asyncio.sleep(0.05)


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "sqlite:///tasks.db"
    for name, task_id in asyncio.run(fill(target)).items():
        print(f"{name:8} {task_id}")
