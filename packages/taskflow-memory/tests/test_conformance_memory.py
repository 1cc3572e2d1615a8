"""The memory backend passes the shared conformance suite."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.testing import BackendConformance
from taskflow_memory import MemoryBackend


class TestMemoryBackendConformance(BackendConformance):
    """Run every standard test on a fresh :class:`MemoryBackend`."""

    @pytest.fixture
    async def backend(self, clock: ManualClock) -> AsyncIterator[MemoryBackend]:
        backend = MemoryBackend(clock=clock)
        await backend.open()
        yield backend
        await backend.close()
