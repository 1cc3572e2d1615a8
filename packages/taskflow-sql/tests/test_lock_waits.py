"""A write that meets a row lock held elsewhere: MySQL's lock wait timeout (1205).

The server reports it only after waiting ``innodb_lock_wait_timeout`` (50 s by default).
Trying again at once would hold the caller that long each time, so a write is tried
again only while it is within ``RETRY_WINDOW`` of its first try.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from taskflow_sql.errors import RETRIES, is_retryable, retried
from taskflow_sql.urls import parse_url

from .conftest import Place

pytestmark = pytest.mark.anyio


async def test_a_lock_wait_timeout_is_tried_again_only_within_the_window(
    mysql_place: Place,
) -> None:
    engine = create_async_engine(parse_url(mysql_place.url).url)
    table = f"`{mysql_place.prefix}locked`"
    tries = 0

    async def update() -> None:
        """One try of a write whose row is locked: the server gives up after 1 s."""
        nonlocal tries
        tries += 1
        async with engine.connect() as conn:
            await conn.execute(text("SET SESSION innodb_lock_wait_timeout = 1"))
            await conn.execute(text(f"UPDATE {table} SET n = n + 1 WHERE id = 1"))
            await conn.commit()

    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(f"CREATE TABLE {table} (id INT PRIMARY KEY, n INT) ENGINE=InnoDB")
            )
            await conn.execute(text(f"INSERT INTO {table} VALUES (1, 0)"))
        async with engine.connect() as holder, holder.begin():
            await holder.execute(text(f"SELECT n FROM {table} WHERE id = 1 FOR UPDATE"))

            # the server waited 1 s, past a window of 0.5 s: given up after one try
            with pytest.raises(DBAPIError) as caught:
                await retried(update, window=0.5)
            assert is_retryable(caught.value), caught.value
            assert tries == 1

            # a server that gives up sooner than the window: tried again, RETRIES in all
            tries = 0
            with pytest.raises(DBAPIError):
                await retried(update, window=60)
            assert tries == RETRIES

            await holder.rollback()
    finally:
        await engine.dispose()
