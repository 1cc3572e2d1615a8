"""A queue worker's claim that committed but whose reply was lost: its tasks still run.

The backend's ``claim`` is wrapped so that the first claim that takes tasks commits for
real and then raises ``BackendUnavailableError``, as a connection dropped right after
the commit does. The claimed tasks are then PENDING, owned by the (live) instance and on
no queue; the worker must find them once the store answers again and run each once.
Real SQLite, PostgreSQL and MySQL/MariaDB (the ``place`` fixture), nothing mocked.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from typing import Any

import pytest

from fastapi_taskflow import BackendUnavailableError, ManagedBackgroundTasks, TaskManager
from fastapi_taskflow.clock import SystemClock
from fastapi_taskflow.models import Claim, TaskRecord, TaskStatus
from taskflow_sql import SQLBackend

pytestmark = pytest.mark.anyio

DEADLINE = 20.0


class LosesOneClaimReply(SQLBackend):
    """The first claim that takes something commits, then fails as a lost reply does.

    Claims find nothing until ``gate`` is set, so the test decides what is queued when
    the lost claim runs."""

    lost: list[Claim] | None = None
    gate = False

    async def claim(self, *, queue: str, owner: str, limit: int = 1) -> list[Claim]:
        if not self.gate:
            return []
        claims = await super().claim(queue=queue, owner=owner, limit=limit)
        if claims and self.lost is None:
            self.lost = claims
            raise BackendUnavailableError("connection lost after the claim committed")
        return claims


def lossy(place: Any) -> LosesOneClaimReply:
    return LosesOneClaimReply(
        place.url, table_prefix=place.prefix, schema=place.schema, clock=SystemClock()
    )


async def statuses(tm: TaskManager, task_ids: list[str]) -> dict[str, TaskStatus | None]:
    records = [await tm.store.aget(task_id) for task_id in task_ids]
    return {
        t: (r.status if r is not None else None) for t, r in zip(task_ids, records, strict=True)
    }


async def wait_for(tm: TaskManager, task_ids: list[str], status: TaskStatus) -> None:
    """Poll until every task has ``status``; fail with what they have at the deadline."""
    deadline = time.monotonic() + DEADLINE
    while True:
        now = await statuses(tm, task_ids)
        if all(s is status for s in now.values()):
            return
        assert time.monotonic() < deadline, f"still not {status.value}: {now}"
        await asyncio.sleep(0.05)


async def test_tasks_of_a_claim_whose_reply_was_lost_run_once(place: Any) -> None:
    backend = lossy(place)
    tm = TaskManager(backend=backend, poll_interval=0.2)
    runs: list[str] = []

    @tm.task(name="lost_claim.job")
    async def job(name: str) -> str:
        runs.append(name)
        return name

    async with tm:
        # Accepted elsewhere (another instance, still alive: not adopted), queued here.
        now = datetime.now(timezone.utc)
        foreign = TaskRecord(
            task_id="foreign-task",
            func_name="lost_claim.job",
            args=["foreign"],
            kwargs={},
            created_at=now,
            updated_at=now,
            owner="another-instance",
        )
        assert (await backend.create(foreign)).created
        await backend.enqueue(foreign.task_id, queue="default")
        # Accepted here: queued (no request, no container).
        own = [tm.add_task(job, f"own-{i}") for i in range(3)]
        task_ids = [*own, foreign.task_id]
        while await backend.queue_length("default") < len(task_ids):
            await asyncio.sleep(0.01)  # add_task() returns before its enqueue
        backend.gate = True  # the next claim takes all four, and its reply is lost
        await wait_for(tm, task_ids, TaskStatus.SUCCESS)
        assert backend.lost is not None
        assert sorted(c.task_id for c in backend.lost) == sorted(task_ids)
    assert sorted(runs) == sorted(["own-0", "own-1", "own-2", "foreign"])


async def test_the_sweep_leaves_an_unstarted_background_task_to_its_container(
    place: Any,
) -> None:
    backend = lossy(place)
    tm = TaskManager(backend=backend, poll_interval=0.2)
    runs: list[str] = []

    @tm.task(name="lost_claim.job")
    async def job(name: str) -> str:
        runs.append(name)
        return name

    async with tm:
        container = ManagedBackgroundTasks(tm)
        background = container.add_task(job, "background")
        await wait_for(tm, [background], TaskStatus.PENDING)  # in the store, ours
        lost = tm.add_task(job, "lost")
        while await backend.queue_length("default") < 1:
            await asyncio.sleep(0.01)
        backend.gate = True
        # The sweep runs what the lost claim took only once it has looked at every
        # task this instance owns, the background one included.
        await wait_for(tm, [lost], TaskStatus.SUCCESS)
        assert backend.lost and [c.task_id for c in backend.lost] == [lost]
        assert (await statuses(tm, [background])) == {background: TaskStatus.PENDING}
        assert runs == ["lost"]
        await container()  # the container runs it, once
        await wait_for(tm, [background], TaskStatus.SUCCESS)
    assert runs == ["lost", "background"]
