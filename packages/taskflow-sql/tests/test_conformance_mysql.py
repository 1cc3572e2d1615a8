"""The SQL backend on MySQL passes the shared conformance suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.testing import BackendConformance
from taskflow_sql import SQLBackend


class TestMySQLConformance(BackendConformance):
    """Every standard test on a fresh, isolated MySQL store."""

    @pytest.fixture
    async def backend(self, clock: ManualClock, mysql_place: Any) -> AsyncIterator[SQLBackend]:
        backend = SQLBackend(
            mysql_place.url, table_prefix=mysql_place.prefix, schema=mysql_place.schema, clock=clock
        )
        await backend.open()
        yield backend
        await backend.close()
