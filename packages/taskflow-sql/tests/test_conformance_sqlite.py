"""The SQL backend on SQLite passes the shared conformance suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.testing import BackendConformance
from taskflow_sql import SQLBackend


class TestSQLiteConformance(BackendConformance):
    """Every standard test on a fresh, isolated SQLite store."""

    @pytest.fixture
    async def backend(self, clock: ManualClock, sqlite_place: Any) -> AsyncIterator[SQLBackend]:
        backend = SQLBackend(
            sqlite_place.url,
            table_prefix=sqlite_place.prefix,
            schema=sqlite_place.schema,
            clock=clock,
        )
        await backend.open()
        yield backend
        await backend.close()
