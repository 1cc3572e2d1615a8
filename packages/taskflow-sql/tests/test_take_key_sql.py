"""transition(take_key=True) when a create takes the key while the retry is underway.

The conformance suite races retries and creates; here the interleaving is forced: a
second connection holds an uncommitted write that gives the key to another task, the
retry's transition starts and waits on it, then that write commits. PostgreSQL meets
the UNIQUE index in the UPDATE (its transaction aborted, the holder read after the
rollback); MySQL/MariaDB's locking look-up waits and then finds the holder. Either way
the retry is refused naming the holder, and nothing of it is written.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.errors import IdempotencyKeyHeldError
from fastapi_taskflow.models import TaskRecord, TaskStatus, TaskUpdate
from taskflow_sql import SQLBackend
from taskflow_sql.rows import key_hash

pytestmark = pytest.mark.anyio

KEY = "charge-order-7"


@pytest.fixture(params=["postgres", "mysql"])
def shared_place(request: pytest.FixtureRequest) -> Any:
    """A place on each server engine (SQLite's single writer has no such race)."""
    return request.getfixturevalue(f"{request.param}_place")


@pytest.fixture
async def backend(shared_place: Any) -> Any:
    place = shared_place
    backend = SQLBackend(
        place.url, table_prefix=place.prefix, schema=place.schema, clock=ManualClock()
    )
    await backend.open()
    yield backend
    await backend.close()


def _record(clock: ManualClock, task_id: str, **fields: Any) -> TaskRecord:
    now = clock.now()
    return TaskRecord(
        task_id=task_id, func_name="jobs.charge", created_at=now, updated_at=now, **fields
    )


async def _lock_waits(conn: AsyncConnection, kind: str, table: str) -> int:
    """How many statements on ``table`` wait for a lock now (MySQL/MariaDB: are in
    flight on its idempotency keys, which while the other write is open means waiting)."""
    if kind == "postgresql":
        query = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query LIKE :table"
        )
    else:
        query = (
            "SELECT count(*) FROM information_schema.processlist WHERE id <> CONNECTION_ID() "
            "AND info LIKE :table AND info LIKE '%active_key%'"
        )
    waiting = int(await conn.scalar(text(query), {"table": f"%{table}%"}) or 0)
    await conn.rollback()  # PostgreSQL keeps one statistics snapshot per transaction
    return waiting


async def test_a_key_taken_during_the_retry_refuses_it(backend: SQLBackend) -> None:
    clock = backend.clock
    assert isinstance(clock, ManualClock)
    await backend.create(_record(clock, "old", idempotency_key=KEY))
    assert await backend.transition("old", expected=[TaskStatus.PENDING], new=TaskStatus.RUNNING)
    assert await backend.transition("old", expected=[TaskStatus.RUNNING], new=TaskStatus.FAILED)
    before = await backend.get("old")
    # Stored FAILED, so it holds no key yet; the open transaction below gives it the key
    # as a create that is not committed yet would.
    await backend.create(_record(clock, "new", idempotency_key=KEY, status=TaskStatus.FAILED))
    tasks = backend.tables.tasks
    kind = backend.engine.dialect.name

    async with backend.engine.connect() as other, backend.engine.connect() as probe:
        await other.begin()
        await other.execute(
            update(tasks).where(tasks.c.task_id == "new").values(active_key=key_hash(KEY))
        )
        retry = asyncio.ensure_future(
            backend.transition(
                "old",
                expected=[TaskStatus.FAILED],
                new=TaskStatus.PENDING,
                update=TaskUpdate(attempt=0, error=None),
                take_key=True,
            )
        )
        with anyio.fail_after(10):
            while await _lock_waits(probe, kind, tasks.name) == 0:
                assert not retry.done(), f"the retry did not wait: {retry.result()!r}"
                await anyio.sleep(0.01)
        await other.commit()

    with pytest.raises(IdempotencyKeyHeldError) as raised:
        await retry
    assert raised.value.key_holder == "new" and raised.value.status == "failed"
    assert await backend.get("old") == before
    holder = await backend.find_by_key(KEY)
    assert holder is not None and holder.task_id == "new"
    async with backend.engine.connect() as conn:
        holders = await conn.scalar(
            select(func.count()).select_from(tasks).where(tasks.c.active_key == key_hash(KEY))
        )
    assert holders == 1
