"""Fixtures for the engine's own tests."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def eventually() -> Callable[..., object]:
    """The :func:`poll_until` helper, as a fixture."""
    return poll_until


async def poll_until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll ``predicate`` until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await anyio.sleep(0.005)
