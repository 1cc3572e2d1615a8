"""Redis Cluster specifics: one slot per prefix, events across nodes, URL and forks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.events import LifecycleEvent, bus_event_adapter
from fastapi_taskflow.models import TaskRecord, TaskStatus
from taskflow_redis import RedisBackend

from .conftest import opened, unique_prefix

pytestmark = pytest.mark.anyio


@pytest.fixture
async def on_cluster(redis_cluster: list[int], clock: ManualClock) -> AsyncIterator[RedisBackend]:
    """A backend reaching the cluster by URL (``?cluster=true``)."""
    url = f"redis://127.0.0.1:{redis_cluster[0]}/0?cluster=true&prefix={unique_prefix()}"
    async with opened(RedisBackend(url, clock=clock)) as backend:
        yield backend


def record(clock: ManualClock, task_id: str) -> TaskRecord:
    now = clock.now()
    return TaskRecord(task_id=task_id, func_name="tests.job", created_at=now, updated_at=now)


async def test_cluster_url_and_one_slot(on_cluster: RedisBackend, clock: ManualClock) -> None:
    client = on_cluster.client
    assert isinstance(client, RedisCluster)
    for n in range(20):
        await on_cluster.create(record(clock, f"t{n}"))
        await on_cluster.enqueue(f"t{n}", queue=f"q{n % 3}")
    keys = [key async for key in client.scan_iter(match=on_cluster._keys.pattern)]
    assert len(keys) > 20
    slot = client.keyslot(on_cluster._keys.base)
    assert {client.keyslot(key) for key in keys} == {slot}
    claims = await on_cluster.claim(queue="q0", owner="w", limit=10)
    assert len(claims) == 7
    assert await on_cluster.owners() == {"w"}
    assert len(await on_cluster.owned("w")) == 7


async def test_events_published_on_any_node_reach_subscribers(
    on_cluster: RedisBackend, redis_cluster: list[int], clock: ManualClock
) -> None:
    event = LifecycleEvent(
        task_id="t1", func_name="tests.job", timestamp=clock.now(), status=TaskStatus.SUCCESS
    )
    payload = bus_event_adapter.dump_json(event)
    async with on_cluster.subscribe() as events:
        for port in redis_cluster:  # every node, including those not owning the slot
            async with Redis(host="127.0.0.1", port=port) as node:
                await node.publish(on_cluster._keys.channel, payload)
        stream = aiter(events)
        received = [await asyncio.wait_for(anext(stream), timeout=10) for _ in redis_cluster]
    assert received == [event] * len(redis_cluster)


async def test_fork_of_a_cluster_backend(on_cluster: RedisBackend, clock: ManualClock) -> None:
    await on_cluster.create(record(clock, "t1"))
    fork = on_cluster.fork()
    await fork.open()
    try:
        assert isinstance(fork.client, RedisCluster)
        assert fork.client is not on_cluster.client
        moved = await fork.transition("t1", expected=[TaskStatus.PENDING], new=TaskStatus.RUNNING)
        assert moved is not None
    finally:
        await fork.close()
    fetched = await on_cluster.get("t1")
    assert fetched is not None and fetched.status is TaskStatus.RUNNING
