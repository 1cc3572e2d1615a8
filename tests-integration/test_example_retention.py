"""examples/retention.py does what docs/retention.md says."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "retention.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("taskflow_examples.retention", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_retention_example(wait_for: Callable[..., Awaitable[Any]]) -> None:
    example = load()
    tm = example.task_manager
    assert tm.retention.days == 1
    transport = httpx.ASGITransport(app=example.app)
    async with tm, httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        ids = [(await http.post(f"/images/{n}/resize")).json()["task_id"] for n in range(3)]
        for task_id in ids:
            record = await tm.store.aget(task_id)
            assert record is not None and record.result == f"resized {ids.index(task_id)}"
        # Finished a moment ago: older than an hour? No.
        assert (await http.post("/admin/purge", params={"minutes": 60})).json() == {"deleted": 0}
        assert (await http.post("/admin/purge", params={"minutes": 0})).status_code == 422
        deleted = 0

        async def purged_all() -> bool:
            nonlocal deleted
            answer = await http.post("/admin/purge", params={"minutes": 0.0001})
            deleted += answer.json()["deleted"]
            return deleted == 3

        await wait_for(purged_all, timeout=10)
        assert [await tm.store.aget(t) for t in ids] == [None, None, None]
