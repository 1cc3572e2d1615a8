"""``write_many`` in one round trip, and the direct line's behaviour when connections fail.

The round trips are counted by the server (``INFO commandstats`` of a private
redis-server, so no other test's commands are mixed in); the failures are real: a
client paused by the server, then killed (``CLIENT PAUSE``, ``CLIENT KILL``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.errors import BackendUnavailableError
from fastapi_taskflow.models import TaskStatus
from taskflow_redis import RedisBackend
from taskflow_redis.store import CREATE_BATCH, WRITE_BATCH, _calls

from .conftest import finish, opened, record, start, unique_prefix

pytestmark = pytest.mark.anyio

PENDING, RUNNING, SUCCESS = TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.SUCCESS
DEADLINE = 10.0
"""Seconds a test waits for the server to show a paused command."""


@pytest.fixture
async def admin(unix_socket: Path) -> AsyncIterator[Redis]:
    """A plain client of the private server, for its counters and client controls."""
    client = Redis(unix_socket_path=str(unix_socket))
    try:
        yield client
    finally:
        await client.client_unpause()
        await client.aclose()


@pytest.fixture
async def private(unix_socket: Path, clock: ManualClock) -> AsyncIterator[RedisBackend]:
    """A backend on the private server (fresh prefix)."""
    backend = RedisBackend(f"unix://{unix_socket}?db=5", prefix=unique_prefix(), clock=clock)
    async with opened(backend):
        yield backend


async def script_calls(admin: Redis) -> dict[str, int]:
    """Calls per script command (EVAL, EVALSHA, SCRIPT ...) since the last reset."""
    stats = await admin.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if name.startswith(("cmdstat_eval", "cmdstat_script", "cmdstat_multi", "cmdstat_exec"))
    }


async def test_a_group_commit_is_one_command(
    private: RedisBackend, admin: Redis, clock: ManualClock
) -> None:
    await private.create_many([record(clock, f"old{n}") for n in range(10)])
    await private.create_many([record(clock, f"run{n}", RUNNING) for n in range(10)])
    fresh = [record(clock, f"new{n}") for n in range(25)]
    changes = [start(f"old{n}") for n in range(10)] + [finish(f"run{n}") for n in range(10)]
    changes += [start(f"new{n}") for n in range(5)]  # tasks created by the same call
    await admin.config_resetstat()
    created, changed = await private.write_many(fresh, changes)
    assert await script_calls(admin) == {"evalsha": 1}
    assert all(result.created for result in created)
    assert [r.status if r else None for r in changed] == [RUNNING] * 10 + [SUCCESS] * 10 + [
        RUNNING
    ] * 5
    stats = await private.stats()
    assert stats.by_status == {PENDING: 20, RUNNING: 15, SUCCESS: 10}


async def test_a_write_beyond_the_batch_limits_is_cut_in_order(
    private: RedisBackend, admin: Redis, clock: ManualClock
) -> None:
    fresh = [record(clock, f"t{n:04d}") for n in range(CREATE_BATCH + 100)]
    # Changes to tasks of the first and of the last script call of the records.
    changes = [start(f"t{n:04d}") for n in range(0, CREATE_BATCH + 100, 2)]
    await admin.config_resetstat()
    created, changed = await private.write_many(fresh, changes)
    assert await script_calls(admin) == {"evalsha": 2}
    assert len(created) == len(fresh) and all(result.created for result in created)
    assert [r.task_id if r else None for r in changed] == [c.task_id for c in changes]
    stats = await private.stats()
    assert stats.by_status == {PENDING: len(fresh) - len(changes), RUNNING: len(changes)}


@pytest.mark.parametrize(
    ("records", "changes", "sizes"),
    [
        (0, 0, []),
        (25, 50, [(25, 50)]),
        (0, WRITE_BATCH, [(0, WRITE_BATCH)]),
        (0, WRITE_BATCH + 1, [(0, WRITE_BATCH), (0, 1)]),
        (CREATE_BATCH, WRITE_BATCH - CREATE_BATCH, [(CREATE_BATCH, WRITE_BATCH - CREATE_BATCH)]),
        (CREATE_BATCH + 1, 0, [(CREATE_BATCH, 0), (1, 0)]),
        (CREATE_BATCH + 1, WRITE_BATCH, [(CREATE_BATCH, 0), (1, WRITE_BATCH - 1), (0, 1)]),
    ],
)
def test_calls_respect_both_limits(
    records: int, changes: int, sizes: list[tuple[int, int]], clock: ManualClock
) -> None:
    recs = [record(clock, f"t{n}") for n in range(records)]
    items = [(f"t{n}", ",pending,", "running", None) for n in range(changes)]
    calls = _calls(recs, items)
    assert [(len(r), len(c)) for r, c in calls] == sizes
    assert [x for r, _ in calls for x in r] == recs
    assert [x for _, c in calls for x in c] == items


async def _paused_script_client(admin: Redis) -> int:
    """The id of the client whose script call the server holds (``CLIENT PAUSE``)."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        for client in await admin.client_list():
            if client.get("cmd") == "evalsha" and "b" in client.get("flags", ""):
                return int(client["id"])
        await asyncio.sleep(0.01)
    raise AssertionError(f"no script call was held by the server within {DEADLINE:.0f}s")


async def test_a_connection_dropped_mid_write_is_reported_and_the_next_call_works(
    private: RedisBackend, admin: Redis, clock: ManualClock
) -> None:
    await private.create(record(clock, "before"))  # the connection is up
    await admin.client_pause(60_000, all=False)  # writes (so scripts) wait
    write = asyncio.create_task(private.write_many([record(clock, "lost")], [start("before")]))
    try:
        victim = await _paused_script_client(admin)
        await admin.client_kill_filter(_id=str(victim))
    finally:
        await admin.client_unpause()
    with pytest.raises(BackendUnavailableError, match="unreachable"):
        await write
    created, changed = await private.write_many([record(clock, "after")], [start("before")])
    assert created[0].created
    assert changed[0] is not None and changed[0].status is RUNNING
    assert await private.get("after") is not None


async def test_a_connection_closed_while_idle_is_replaced_without_an_error(
    private: RedisBackend, admin: Redis, clock: ManualClock
) -> None:
    await private.create(record(clock, "first"))
    killed = await admin.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1
    await admin.ping()  # one more round trip: the backend's loop has seen the close
    created, _ = await private.write_many([record(clock, "second")], [])
    assert created[0].created


async def test_a_write_held_longer_than_the_socket_timeout_is_reported(
    unix_socket: Path, admin: Redis, clock: ManualClock
) -> None:
    url = f"unix://{unix_socket}?db=5&socket_timeout=0.5"
    backend = RedisBackend(url, prefix=unique_prefix(), clock=clock)
    await backend.open()
    try:
        await admin.client_pause(60_000, all=False)
        try:
            with pytest.raises(BackendUnavailableError, match="unreachable"):
                await backend.create(record(clock, "held"))
        finally:
            await admin.client_unpause()
        assert (await backend.create(record(clock, "next"))).created
    finally:
        await backend.delete_all()
        await backend.close()
