"""Periodic and one-off schedules.

* ``refresh_rates`` runs every second (each firing is an ordinary task: record, retries,
  logs, events). ``nightly_report`` runs at 02:00 Paris time. ``sync_inventory`` takes
  longer than its interval; with ``overlap=False`` the ticks in between are skipped, so
  one sync runs at a time.
* ``POST /reminders/{user}`` schedules a one-off reminder ``delay`` seconds from now under
  the run key ``reminder:{user}``: posting again for the same user *moves* the pending
  reminder instead of adding a second one. ``DELETE`` calls it off; ``GET /reminders``
  lists the pending ones.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from fastapi import FastAPI

from fastapi_taskflow import TaskManager

task_manager = TaskManager()
app = FastAPI()
task_manager.install(app)

rates: list[str] = []
sent: list[str] = []
syncs: list[str] = []


# Every instance runs the timer; each tick fires once in total.
@task_manager.schedule(every=timedelta(seconds=1), retries=2, name="refresh_rates")
async def refresh_rates() -> None:
    rates.append("EUR/USD")


# Needs the cron parser: pip install "taskflow-core[cron]".
@task_manager.schedule(cron="0 2 * * *", timezone="Europe/Paris", name="nightly_report")
def nightly_report() -> None:
    print("building the nightly report")


# Takes 1.2 s, ticks every 0.5 s: without overlap=False, three would run at once.
@task_manager.schedule(every=timedelta(seconds=0.5), overlap=False, name="sync_inventory")
async def sync_inventory() -> None:
    syncs.append("start")
    await asyncio.sleep(1.2)
    syncs.append("end")


@task_manager.task(retries=3, delay=1)
async def send_reminder(user: str, text: str) -> str:
    sent.append(f"{user}: {text}")
    return f"reminded {user}"


@app.post("/reminders/{user}")
async def remind(user: str, text: str, delay: float = 60) -> dict[str, str]:
    task_id = await task_manager.schedule_once(
        send_reminder, user, text, delay=delay, run_key=f"reminder:{user}"
    )
    return {"task_id": task_id}


@app.delete("/reminders/{user}")
async def forget(user: str) -> dict[str, bool]:
    return {"cancelled": await task_manager.cancel_scheduled(f"reminder:{user}")}


@app.get("/reminders")
async def pending() -> list[dict[str, Any]]:
    return [s.model_dump(mode="json") for s in await task_manager.list_scheduled()]
