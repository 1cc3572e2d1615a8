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
from typing import Any

import pytest

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.testing.suite._base import make_record, new_id
from taskflow_sql.rows import record_values

pytestmark = pytest.mark.anyio


async def waiting_for_lock(backend: Any, table: str, timeout: float = 10.0) -> None:
    """Return once a statement on ``table`` waits for a row lock (the server says so;
    asked on a connection of its own, not one of the backend's pool)."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    deadline = asyncio.get_running_loop().time() + timeout
    watcher = create_async_engine(backend.engine.url)
    try:
        async with watcher.connect() as conn:
            while True:
                waiting = await conn.scalar(
                    text(
                        "SELECT COUNT(*) FROM information_schema.innodb_trx "
                        "WHERE trx_state = 'LOCK WAIT' AND trx_query LIKE :table"
                    ),
                    {"table": f"%{table}%"},
                )
                await conn.rollback()
                if waiting:
                    return
                assert asyncio.get_running_loop().time() < deadline, "the INSERT never waited"
                await asyncio.sleep(0.02)
    finally:
        await watcher.dispose()


async def test_create_many_cancelled_in_a_raw_statement_is_cancelled(mysql_place: Any) -> None:
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
            await waiting_for_lock(backend, backend.tables.tasks.name)
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
