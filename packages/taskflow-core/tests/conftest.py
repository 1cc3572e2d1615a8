"""Fixtures for the engine's own tests."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager, TaskRecord


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def eventually() -> Callable[..., object]:
    """The :func:`poll_until` helper, as a fixture."""
    return poll_until


async def poll_until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll ``predicate`` (a plain or an async function) until it is truthy; fail after
    ``timeout`` seconds. (An async one was taken as true at once: its coroutine.)"""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await anyio.sleep(0.005)


@pytest.fixture
def one_request() -> Callable[..., object]:
    """The :func:`run_one_request` helper, as a fixture."""
    return run_one_request


async def run_one_request(tm: TaskManager, *functions: Callable[..., Any]) -> list[TaskRecord]:
    """Add each of ``functions`` (no arguments) to one request's task list, run the
    list as Starlette does after the response, and return the tasks' records."""
    async with tm:
        tasks = ManagedBackgroundTasks(tm)
        ids = [tasks.add_task(function) for function in functions]
        await tasks()
        records = [tm.store.get(task_id) for task_id in ids]
    assert all(record is not None for record in records)
    return records  # type: ignore[return-value]
