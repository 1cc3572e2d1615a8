"""PostgreSQL event subscriptions end with an error when their connection is lost.

A LISTEN connection killed by the server (a restart, an administrator) used to leave the
subscriber waiting forever for notifications that could no longer arrive; now the stream
raises ``BackendUnavailableError`` and a new subscription works.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from fastapi_taskflow.errors import BackendUnavailableError
from fastapi_taskflow.events import LifecycleEvent
from fastapi_taskflow.models import TaskStatus
from taskflow_sql import SQLBackend
from taskflow_sql.urls import parse_url

pytestmark = pytest.mark.anyio


def _event(task_id: str) -> LifecycleEvent:
    return LifecycleEvent(
        task_id=task_id,
        func_name="f",
        attempt=1,
        tags={},
        timestamp=datetime.now(timezone.utc),
        instance_id="elsewhere",
        status=TaskStatus.SUCCESS,
        queue="default",
    )


async def _terminate_listeners(url: str, schema: str) -> int:
    engine = create_async_engine(parse_url(url).url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE query ILIKE 'LISTEN%' AND query LIKE :schema"
                ),
                {"schema": f"%{schema}%"},
            )
            return len(rows.all())
    finally:
        await engine.dispose()


async def test_subscription_raises_when_its_connection_is_killed(postgres_place: Any) -> None:
    backend = SQLBackend(
        postgres_place.url, table_prefix=postgres_place.prefix, schema=postgres_place.schema
    )
    await backend.open()
    try:
        async with backend.subscribe() as events:
            stream = events.__aiter__()
            await backend.publish(_event("before"))
            assert (await asyncio.wait_for(stream.__anext__(), 5)).task_id == "before"
            assert await _terminate_listeners(postgres_place.url, postgres_place.schema) == 1
            with pytest.raises(BackendUnavailableError, match="LISTEN connection was closed"):
                await asyncio.wait_for(stream.__anext__(), 5)
        async with backend.subscribe() as events:
            stream = events.__aiter__()
            await backend.publish(_event("after"))
            assert (await asyncio.wait_for(stream.__anext__(), 5)).task_id == "after"
    finally:
        await backend.close()


async def test_a_subscription_cancelled_while_it_starts_returns_its_connection(
    postgres_place: Any,
    cancelled_at_the_driver: Callable[..., Awaitable[None]],
) -> None:
    """subscribe() cancelled between checking out its LISTEN connection and listening
    returns the connection to the pool, rather than leaving it checked out for the
    garbage collector to find (SQLAlchemy then terminates it with a warning)."""
    backend = SQLBackend(
        postgres_place.url, table_prefix=postgres_place.prefix, schema=postgres_place.schema
    )
    await backend.open()
    try:
        pool = backend.engine.sync_engine.pool
        before = pool.checkedout()

        async def subscribe() -> None:
            async with backend.subscribe():
                pass

        await cancelled_at_the_driver(subscribe)
        assert pool.checkedout() == before
    finally:
        await backend.close()
