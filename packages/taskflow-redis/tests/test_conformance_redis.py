"""The Redis backend passes the shared conformance suite against a real server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.testing import BackendConformance
from taskflow_redis import RedisBackend

from .conftest import opened, unique_prefix


class TestRedisConformance(BackendConformance):
    """Every standard test on a fresh prefix of the Redis at ``TASKFLOW_TEST_REDIS_URL``."""

    @pytest.fixture
    async def backend(self, clock: ManualClock, redis_url: str) -> AsyncIterator[RedisBackend]:
        async with opened(RedisBackend(redis_url, prefix=unique_prefix(), clock=clock)) as backend:
            yield backend
