"""The Redis backend passes the shared conformance suite against a real server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.testing import BackendConformance
from taskflow_redis import RedisBackend

from .conftest import unique_prefix


class TestRedisConformance(BackendConformance):
    """Every standard test on a fresh prefix of the Redis at ``TASKFLOW_TEST_REDIS_URL``."""

    @pytest.fixture
    async def backend(self, clock: ManualClock, redis_url: str) -> AsyncIterator[RedisBackend]:
        backend = RedisBackend(redis_url, prefix=unique_prefix(), clock=clock)
        await backend.open()
        try:
            yield backend
        finally:
            await backend.delete_all()
            await backend.close()
