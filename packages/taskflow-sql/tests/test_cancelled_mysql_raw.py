"""A MySQL write cancelled inside a statement sent straight to the driver stays cancelled.

``create_many`` and the grouped transitions send their big statements to the asyncmy
connection under SQLAlchemy's transaction (:mod:`taskflow_sql.mysql_raw`). asyncmy,
cancelled in the middle of a statement, marks its connection unusable; the rollback that
SQLAlchemy then runs on it failed with ``InterfaceError: Cancelled during execution``,
which replaced the ``CancelledError`` and came out as ``BackendUnavailableError``: a
cancelled caller (a shutdown, a timeout) carried on as if the store were down, and its
retry loop outlived the cancellation. The connection is now invalidated at once and
the cancellation goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.testing.suite._base import make_record, new_id
from taskflow_sql.rows import record_values

pytestmark = pytest.mark.anyio


async def test_create_many_cancelled_in_a_raw_statement_is_cancelled(
    mysql_place: Any, statement_blocked: Callable[..., Awaitable[None]]
) -> None:
    clock = ManualClock()
    backend = mysql_place.backend(clock)
    await backend.open()
    try:
        records = [make_record(clock, task_id=new_id()) for _ in range(2)]
        async with backend.engine.connect() as other:
            # Another transaction inserts the first id, uncommitted: the batch's INSERT
            # (sent to the driver) waits for its row lock.
            await other.execute(backend.tables.tasks.insert(), [record_values(records[0])])
            creating = asyncio.ensure_future(backend.create_many(records))
            await statement_blocked(backend, f"INSERT INTO {backend.tables.tasks.name} %")
            assert not creating.done()
            creating.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(creating, 10)
            await other.rollback()
        pool = backend.engine.sync_engine.pool
        assert pool.checkedout() == 0
        # the pool works afterwards, and the batch was not written
        assert await backend.queue_length("default") == 0
        assert await backend.get(records[1].task_id) is None
        made = await backend.create_many(records)
        assert [result.created for result in made] == [True, True]
    finally:
        await backend.close()
