"""A queue worker's claim that committed but whose reply was lost: its tasks still run.

On every durable backend, the store's ``claim`` is wrapped so that the first claim that
takes tasks runs for real and then raises ``BackendUnavailableError``, as a connection
dropped right after the commit does. The claimed tasks are then PENDING, owned by the
(live) instance and on no queue; the queue worker must find them once the store answers
again (``fastapi_taskflow.lost_claims``) and run each once. The error is raised above the
backend, so a backend's own recovery (Redis's claim-token log) sees a successful call:
this is what a backend without a recovery of its own needs from the engine. Real
servers, nothing mocked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from durable_stores import DURABLE, isolated_url

from fastapi_taskflow import BackendUnavailableError, ManagedBackgroundTasks, TaskManager
from fastapi_taskflow.models import Claim, TaskRecord, TaskStatus

pytestmark = pytest.mark.anyio

DEADLINE = 20.0


@pytest.fixture(params=sorted(DURABLE))
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from isolated_url(request.param, tmp_path)


class LoseOneClaimReply:
    """Wraps a backend's ``claim``: nothing is claimed until :attr:`gate` is set; then
    the first claim that takes something runs for real and fails as a lost reply does."""

    def __init__(self, backend: Any) -> None:
        self.claim = backend.claim
        self.gate = False
        self.lost: list[Claim] | None = None
        backend.claim = self

    async def __call__(self, *, queue: str, owner: str, limit: int = 1) -> list[Claim]:
        if not self.gate:
            return []
        claims: list[Claim] = await self.claim(queue=queue, owner=owner, limit=limit)
        if claims and self.lost is None:
            self.lost = claims
            raise BackendUnavailableError("connection lost after the claim committed")
        return claims


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


def manager(url: str) -> tuple[TaskManager, Any, list[str]]:
    """A manager on ``url``, its one task function, and the names it ran, in order."""
    tm = TaskManager(backend=url, poll_interval=0.2, publish_events=False)
    runs: list[str] = []

    @tm.task(name="lost_claim.job")
    async def job(name: str) -> str:
        runs.append(name)
        return name

    return tm, job, runs


async def test_tasks_of_a_claim_whose_reply_was_lost_run_once(durable_url: str) -> None:
    """Three tasks queued here and one queued by another (live) instance are taken by a
    claim whose reply is lost: all four run once and end SUCCESS."""
    tm, job, runs = manager(durable_url)
    async with tm:
        backend = tm._engine.backend
        lossy = LoseOneClaimReply(backend)
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
        own = [tm.add_task(job, f"own-{i}") for i in range(3)]
        task_ids = [*own, foreign.task_id]
        while await backend.queue_length("default") < len(task_ids):
            await asyncio.sleep(0.01)  # add_task() returns before its enqueue
        lossy.gate = True  # the next claim takes all four, and its reply is lost
        await wait_for(tm, task_ids, TaskStatus.SUCCESS)
        assert lossy.lost is not None
        assert sorted(c.task_id for c in lossy.lost) == sorted(task_ids)
    assert sorted(runs) == ["foreign", "own-0", "own-1", "own-2"]


async def test_the_sweep_leaves_an_unstarted_background_task_to_its_container(
    durable_url: str,
) -> None:
    """A background task accepted here but not started yet is PENDING and this
    instance's, like a lost claim's: the sweep leaves it, and its container runs it."""
    tm, job, runs = manager(durable_url)
    async with tm:
        backend = tm._engine.backend
        lossy = LoseOneClaimReply(backend)
        container = ManagedBackgroundTasks(tm)
        background = container.add_task(job, "background")
        await wait_for(tm, [background], TaskStatus.PENDING)  # in the store, ours
        lost = tm.add_task(job, "lost")
        while await backend.queue_length("default") < 1:
            await asyncio.sleep(0.01)
        lossy.gate = True
        # The sweep runs what the lost claim took only once it has looked at every
        # task this instance owns, the background one included.
        await wait_for(tm, [lost], TaskStatus.SUCCESS)
        assert lossy.lost and [c.task_id for c in lossy.lost] == [lost]
        assert (await statuses(tm, [background])) == {background: TaskStatus.PENDING}
        assert runs == ["lost"]
        await container()  # the container runs it, once
        await wait_for(tm, [background], TaskStatus.SUCCESS)
    assert runs == ["lost", "background"]
