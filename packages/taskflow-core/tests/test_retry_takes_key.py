"""An operator retry of a FAILED keyed task takes its idempotency key back.

Through the admin API on the memory backend: while the retried task is pending or
running, ``add_task()`` with its key returns the retried task (no second run); when a
new task took the key after the failure, the retry is refused naming that task.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
import httpx
import pytest
from fastapi import FastAPI

from fastapi_taskflow import IdempotencyKeyHeldError, TaskManager, TaskStateError, TaskStatus
from fastapi_taskflow.admin import TaskAdmin
from fastapi_taskflow.clock import SystemClock
from fastapi_taskflow.models import TaskRecord
from fastapi_taskflow.operations import retry_task

pytestmark = pytest.mark.anyio

KEY = "charge-order-7"


@dataclass
class Shop:
    """An app whose ``charge`` task fails its first run and waits on ``gate`` after."""

    tm: TaskManager
    client: httpx.AsyncClient
    charges: list[int] = field(default_factory=list)
    gate: anyio.Event = field(default_factory=anyio.Event)
    started: anyio.Event = field(default_factory=anyio.Event)

    async def status(self, task_id: str) -> TaskRecord:
        record = await self.tm.store.aget(task_id)
        assert record is not None
        return record

    async def settled(self, task_id: str, status: TaskStatus) -> TaskRecord:
        """Poll (with a deadline) until the task is in ``status``."""
        with anyio.fail_after(10):
            while (record := await self.status(task_id)).status is not status:
                await anyio.sleep(0.01)
        return record


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    tm = TaskManager()
    app = FastAPI()
    TaskAdmin(app, tm)
    transport = httpx.ASGITransport(app=app)
    async with tm, httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        state = Shop(tm, client)

        @tm.task(name="shop.charge")
        async def charge(order: int) -> None:
            state.charges.append(order)
            if len(state.charges) == 1:
                raise RuntimeError("card processor timed out")
            state.started.set()
            await state.gate.wait()

        state.tm.app_charge = charge  # type: ignore[attr-defined]
        yield state
        state.gate.set()


async def test_a_retried_failed_task_holds_its_key_again(shop: Shop) -> None:
    charge = shop.tm.app_charge  # type: ignore[attr-defined]
    first = shop.tm.add_task(charge, 7, idempotency_key=KEY)
    await shop.settled(first, TaskStatus.FAILED)

    response = await shop.client.post(f"/tasks/api/tasks/{first}/retry")
    assert response.status_code == 200 and response.json()["status"] == "pending"
    # Pending, then running: a request that adds the same charge gets the retried task.
    assert shop.tm.add_task(charge, 7, idempotency_key=KEY) == first
    with anyio.fail_after(10):
        await shop.started.wait()
    assert shop.tm.add_task(charge, 7, idempotency_key=KEY) == first
    assert (await shop.tm.store.afind_by_key(KEY)).task_id == first  # type: ignore[union-attr]

    shop.gate.set()
    await shop.settled(first, TaskStatus.SUCCESS)
    assert shop.tm.add_task(charge, 7, idempotency_key=KEY) == first
    assert shop.charges == [7, 7], "the order was charged more than once after the retry"
    assert (await shop.tm.store.astats()).total == 1


async def test_a_retry_is_refused_when_a_new_task_took_the_key(shop: Shop) -> None:
    charge = shop.tm.app_charge  # type: ignore[attr-defined]
    first = shop.tm.add_task(charge, 7, idempotency_key=KEY)
    await shop.settled(first, TaskStatus.FAILED)
    newer = shop.tm.add_task(charge, 7, idempotency_key=KEY)
    assert newer != first
    with anyio.fail_after(10):
        await shop.started.wait()

    response = await shop.client.post(f"/tasks/api/tasks/{first}/retry")
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert newer in detail and "RUNNING" in detail
    assert (await shop.status(first)).status is TaskStatus.FAILED

    backend = shop.tm.backend
    with pytest.raises(TaskStateError) as raised:
        await retry_task(backend, first, clock=SystemClock())
    assert isinstance(raised.value.__cause__, IdempotencyKeyHeldError)
    assert raised.value.__cause__.key_holder == newer
    shop.gate.set()
    await shop.settled(newer, TaskStatus.SUCCESS)
    assert shop.charges == [7, 7]
