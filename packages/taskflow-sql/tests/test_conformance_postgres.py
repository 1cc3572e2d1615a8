"""The SQL backend on Postgres passes the shared conformance suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.testing import BackendConformance
from taskflow_sql import SQLBackend


class TestPostgresConformance(BackendConformance):
    """Every standard test on a fresh, isolated Postgres store."""

    @pytest.fixture
    async def backend(self, clock: ManualClock, postgres_place: Any) -> AsyncIterator[SQLBackend]:
        backend = SQLBackend(
            postgres_place.url,
            table_prefix=postgres_place.prefix,
            schema=postgres_place.schema,
            clock=clock,
        )
        await backend.open()
        yield backend
        await backend.close()
