"""Ownership index, heartbeats, group commit and coalesced enqueues: Redis specifics.

The conformance suite proves the protocol; these check what only the Redis layout can
show: the per-owner index is kept by every write (so ``owners()`` never scans), and a
group commit is one script call.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.errors import BackendUnavailableError
from fastapi_taskflow.models import TaskRecord, TaskStatus, TaskUpdate, Transition
from taskflow_redis import RedisBackend

from .conftest import unique_prefix

pytestmark = pytest.mark.anyio

PENDING, RUNNING, SUCCESS = TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.SUCCESS


def count_script_calls(backend: RedisBackend, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the SHA of every script call ``backend`` makes, on its direct line or
    through its client."""
    calls: list[str] = []
    client = backend.client
    real = client.evalsha

    async def counting(sha: str, *args: Any) -> Any:
        calls.append(sha)
        return await real(sha, *args)

    monkeypatch.setattr(client, "evalsha", counting)
    for line in backend._lines:
        monkeypatch.setattr(line, "call", _counting(line.call, calls))
    return calls


def _counting(real_call: Any, calls: list[str]) -> Any:
    async def counting_line(*args: Any) -> Any:
        if args[0] == "EVALSHA":
            calls.append(args[1])
        return await real_call(*args)

    return counting_line


def record(clock: ManualClock, task_id: str, owner: str | None = None) -> TaskRecord:
    now = clock.now()
    return TaskRecord(
        task_id=task_id, func_name="tests.job", created_at=now, updated_at=now, owner=owner
    )


async def index(backend: RedisBackend) -> dict[str, list[str]]:
    """Every owner's index, read straight from Redis."""
    client = backend.client
    found: dict[str, list[str]] = {}
    for owner in await client.smembers(backend._keys.owners):
        name = owner.decode()
        members = await client.zrange(backend._keys.owned(name), 0, -1)
        found[name] = [m.decode()[18:] for m in members]
    return found


async def test_every_write_keeps_the_owner_index(backend: RedisBackend, clock: ManualClock) -> None:
    await backend.create(record(clock, "a", owner="i1"))
    clock.advance(1)
    await backend.create(record(clock, "b"))
    await backend.create(record(clock, "c", owner="i1"))
    assert await index(backend) == {"i1": ["a", "c"]}
    await backend.enqueue("b", queue="q")
    [claim] = await backend.claim(queue="q", owner="i2")
    assert claim.task_id == "b"
    assert await index(backend) == {"i1": ["a", "c"], "i2": ["b"]}
    claimed = await backend.get("b")
    assert claimed is not None and claimed.owner == "i2"
    await backend.transition("a", expected=[PENDING], new=RUNNING)
    await backend.transition(
        "a", expected=[RUNNING], new=SUCCESS, update=TaskUpdate(finished_at=clock.now())
    )
    assert await index(backend) == {"i1": ["c"], "i2": ["b"]}
    await backend.update("c", TaskUpdate(owner="i2"))
    assert await index(backend) == {"i2": ["b", "c"]}
    adopted = await backend.adopt("b", owner="i2", new_owner=None)
    assert adopted is not None and adopted.owner is None
    assert await backend.owners() == {"i2"}
    assert await backend.owned("i2") == ["c"]
    # A finished task that comes back (an operator's retry) is indexed again.
    await backend.transition("a", expected=[SUCCESS], new=PENDING)
    assert await index(backend) == {"i1": ["a"], "i2": ["c"]}
    await backend.transition(
        "a", expected=[PENDING], new=SUCCESS, update=TaskUpdate(finished_at=clock.now())
    )
    assert await backend.purge(finished_before=clock.advance(1)) == 1
    assert await index(backend) == {"i2": ["c"]}


async def test_adopt_keeps_status_and_updated_at(backend: RedisBackend, clock: ManualClock) -> None:
    await backend.create(record(clock, "a", owner="dead"))
    before = await backend.get("a")
    clock.advance(5)
    assert await backend.adopt("a", owner="other", new_owner="me") is None
    adopted = await backend.adopt("a", owner="dead", new_owner="me")
    assert adopted is not None and before is not None
    assert (adopted.owner, adopted.status, adopted.updated_at) == ("me", PENDING, before.updated_at)
    assert await backend.owners() == {"me"}


async def test_group_commit_is_one_script_call(
    backend: RedisBackend, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await backend.create_many([record(clock, f"t{n}", owner="i1") for n in range(50)])
    calls = count_script_calls(backend, monkeypatch)
    started = await backend.transition_many(
        [Transition(f"t{n}", frozenset({PENDING}), RUNNING) for n in range(50)]
        + [Transition("missing", frozenset({PENDING}), RUNNING)]
    )
    assert len(calls) == 1
    assert [r.status if r else None for r in started] == [RUNNING] * 50 + [None]
    finish = TaskUpdate(finished_at=clock.now(), result={"ok": True})
    done = await backend.transition_many(
        [Transition(f"t{n}", frozenset({RUNNING}), SUCCESS, finish) for n in range(50)]
    )
    assert len(calls) == 2
    assert all(r is not None and r.result == {"ok": True} for r in done)
    assert await backend.owners() == set()
    assert (await backend.stats()).by_status == {SUCCESS: 50}


async def test_heartbeats_use_the_backend_clock(backend: RedisBackend, clock: ManualClock) -> None:
    await backend.beat("i1")
    clock.advance(30)
    await backend.beat("i2")
    beats = await backend.heartbeats()
    assert beats == {"i1": clock.now() - timedelta(seconds=30), "i2": clock.now()}
    await backend.forget_instance("i1")
    await backend.forget_instance("unknown")
    assert set(await backend.heartbeats()) == {"i2"}


async def test_concurrent_enqueues_share_one_script_call(
    backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_script_calls(backend, monkeypatch)
    ids = [f"t{n:03d}" for n in range(300)]
    await asyncio.gather(*(backend.enqueue(i, queue="q") for i in ids))
    assert len(calls) == 1
    assert await backend.queue_length("q") == 300
    claims = await backend.claim(queue="q", owner="w", limit=300)
    assert [c.task_id for c in claims] == ids  # enqueue order kept within the batch
    await backend.enqueue("alone", queue="q")
    assert len(calls) == 3


async def test_a_failed_coalesced_enqueue_reaches_every_caller(clock: ManualClock) -> None:
    backend = RedisBackend("redis://127.0.0.1:1/0?socket_connect_timeout=1", clock=clock)
    try:
        results = await asyncio.gather(
            *(backend.enqueue(f"t{n}", queue="q") for n in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, BackendUnavailableError) for r in results)
    finally:
        await backend.close()


async def test_open_upgrades_a_prefix_written_with_leases(
    redis_url: str, clock: ManualClock
) -> None:
    """Active tasks of taskflow-redis 0.1 (no raw owner, leases) get their owner indexed."""
    old = RedisBackend(redis_url, prefix=unique_prefix(), clock=clock)
    await old.open()
    try:
        await old.create(record(clock, "owned", owner="i1"))
        await old.create(record(clock, "leased"))
        await old.create(record(clock, "free"))
        client, base = old.client, old._keys.base
        # What 0.1 left behind: no 'o' field, the lease keys, no schema marker.
        for task_id in ("owned", "leased", "free"):
            await client.hdel(f"{base}task:{task_id}", "o")
        await client.delete(old._keys.owners, old._keys.owned("i1"), f"{base}schema")
        await client.hset(f"{base}lease:owners", mapping={"leased": "i2"})
        await client.zadd(f"{base}leases", {"leased": 1})
        assert await old.owners() == set()
        fresh = RedisBackend(redis_url, prefix=old.prefix, clock=clock)
        await fresh.open()
        try:
            assert await fresh.owners() == {"i1", "i2"}
            assert await fresh.owned("i2") == ["leased"]
            leased = await fresh.get("leased")
            assert leased is not None and leased.owner == "i2"
            assert not await client.exists(f"{base}leases", f"{base}lease:owners")
            await fresh.close()
            await fresh.open()  # the upgrade runs once
            assert await fresh.owners() == {"i1", "i2"}
        finally:
            await fresh.close()
    finally:
        await old.delete_all()
        await old.close()
