"""The Redis backend passes the shared conformance suite on a 3-node Redis Cluster.

The cluster is started by the session fixture ``redis_cluster`` (see conftest.py); the
backend is given redis-py's asyncio ``RedisCluster`` client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import RedisCluster

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.testing import BackendConformance
from taskflow_redis import RedisBackend

from .conftest import opened, unique_prefix


class TestRedisClusterConformance(BackendConformance):
    """Every standard test on a fresh prefix of a self-started Redis Cluster."""

    @pytest.fixture
    async def backend(
        self, clock: ManualClock, redis_cluster: list[int]
    ) -> AsyncIterator[RedisBackend]:
        client = RedisCluster(host="127.0.0.1", port=redis_cluster[0])
        try:
            backend = RedisBackend(client=client, prefix=unique_prefix(), clock=clock)
            async with opened(backend):
                yield backend
        finally:
            await client.aclose()
