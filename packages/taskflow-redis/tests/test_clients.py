"""Connecting: a caller's client or pool, forks, a unix socket, and an unreachable server."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from redis import exceptions as rx
from redis.asyncio import ConnectionPool, Redis

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.errors import BackendUnavailableError
from fastapi_taskflow.models import TaskRecord
from taskflow_redis import RedisBackend

from .conftest import unique_prefix

pytestmark = pytest.mark.anyio


def record(clock: ManualClock, task_id: str = "t1") -> TaskRecord:
    now = clock.now()
    return TaskRecord(task_id=task_id, func_name="tests.job", created_at=now, updated_at=now)


async def test_a_callers_client_is_used_and_left_open(redis_url: str, clock: ManualClock) -> None:
    client = Redis.from_url(redis_url)
    backend = RedisBackend(client=client, prefix=unique_prefix(), clock=clock)
    try:
        await backend.open()
        assert backend.client is client
        assert (await backend.create(record(clock))).created
        assert (await backend.get("t1")) is not None
        await backend.delete_all()
        await backend.close()
        assert await client.ping()
    finally:
        await client.aclose()


async def test_a_callers_pool_is_used_and_left_open(redis_url: str, clock: ManualClock) -> None:
    pool = ConnectionPool.from_url(redis_url)
    backend = RedisBackend(connection_pool=pool, prefix=unique_prefix(), clock=clock)
    try:
        await backend.open()
        assert backend.client.connection_pool is pool
        assert (await backend.create(record(clock))).created
        await backend.delete_all()
        await backend.close()
        async with Redis(connection_pool=pool) as again:
            assert await again.ping()
    finally:
        await pool.aclose()


@pytest.mark.parametrize("source", ["url", "client", "pool"])
async def test_fork_has_its_own_client_over_the_same_data(
    redis_url: str, clock: ManualClock, source: str
) -> None:
    prefix = unique_prefix()
    client = Redis.from_url(redis_url) if source == "client" else None
    pool = ConnectionPool.from_url(redis_url) if source == "pool" else None
    url = redis_url if source == "url" else None
    backend = RedisBackend(url, client=client, connection_pool=pool, prefix=prefix, clock=clock)
    await backend.open()
    fork = backend.fork()
    try:
        assert fork.clock is backend.clock
        assert fork.prefix == prefix
        await fork.open()
        assert fork.client is not backend.client
        assert fork.client.connection_pool is not backend.client.connection_pool
        await backend.create(record(clock))
        assert (await fork.get("t1")) is not None
    finally:
        await fork.close()
        await backend.delete_all()
        await backend.close()
        if client is not None:
            await client.aclose()
        if pool is not None:
            await pool.aclose()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_server_raises_backend_unavailable(clock: ManualClock) -> None:
    backend = RedisBackend(
        f"redis://127.0.0.1:{_closed_port()}/0?socket_connect_timeout=2", clock=clock
    )
    try:
        with pytest.raises(BackendUnavailableError, match="unreachable") as info:
            await backend.open()
        assert isinstance(info.value.__cause__, rx.ConnectionError)
        with pytest.raises(BackendUnavailableError):
            await backend.get("t1")
        with pytest.raises(BackendUnavailableError):
            await backend.claim(queue="default", owner="me")
    finally:
        await backend.close()


async def test_unix_socket_url(unix_socket: Path, clock: ManualClock) -> None:
    backend = RedisBackend(f"unix://{unix_socket}?db=2&prefix=unix-test", clock=clock)
    await backend.open()
    try:
        assert (await backend.create(record(clock))).created
        fetched = await backend.get("t1")
        assert fetched is not None and fetched.func_name == "tests.job"
        assert "unix://" in repr(backend)
    finally:
        await backend.delete_all()
        await backend.close()


async def test_a_client_that_decodes_responses_works(redis_url: str, clock: ManualClock) -> None:
    from fastapi_taskflow.events import LogEvent
    from fastapi_taskflow.models import LogEntry, TaskQuery, TaskStatus

    client = Redis.from_url(redis_url, decode_responses=True)
    backend = RedisBackend(client=client, prefix=unique_prefix(), clock=clock)
    try:
        await backend.open()
        assert (await backend.create(record(clock))).created
        assert not (await backend.create(record(clock))).created
        await backend.append_logs("t1", [LogEntry(timestamp=clock.now(), message="hi")])
        fetched = await backend.get("t1")
        assert fetched is not None and fetched.logs[0].message == "hi"
        await backend.enqueue("t1", queue="q", priority=2)
        [claim] = await backend.claim(queue="q", owner="me")
        assert (claim.task_id, claim.priority) == ("t1", 2)
        assert await backend.owners() == {"me"}
        assert await backend.owned("me") == ["t1"]
        await backend.beat("me")
        assert await backend.heartbeats() == {"me": clock.now()}
        moved = await backend.transition(
            "t1", expected=[TaskStatus.PENDING], new=TaskStatus.RUNNING
        )
        assert moved is not None
        assert [t.task_id for t in (await backend.query(TaskQuery())).items] == ["t1"]
        assert (await backend.stats()).by_status == {TaskStatus.RUNNING: 1}
        async with backend.subscribe() as events:
            sent = LogEvent(task_id="t1", func_name="f", timestamp=clock.now(), message="m")
            await backend.publish(sent)
            assert await asyncio.wait_for(anext(aiter(events)), timeout=10) == sent
        assert await backend.delete_all() > 0
    finally:
        await backend.close()
        await client.aclose()


async def test_scripts_are_reloaded_after_a_script_flush(
    unix_socket: Path, clock: ManualClock
) -> None:
    # On the private server of this module, so no other user's scripts are flushed.
    backend = RedisBackend(f"unix://{unix_socket}?db=3", prefix=unique_prefix(), clock=clock)
    await backend.open()
    try:
        await backend.client.script_flush()
        assert (await backend.create(record(clock))).created
        assert (await backend.get("t1")) is not None
    finally:
        await backend.delete_all()
        await backend.close()
