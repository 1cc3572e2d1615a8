"""Helpers every implementation's scenarios share (no taskflow import here: the
competitor's scenarios import this module in an interpreter where ``fastapi_taskflow``
is the competitor's package)."""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

__all__ = ["drive_http", "in_flight", "rss_mb", "timer"]


CPU_CLOCK = os.environ.get("BENCH_CLOCK", "auto") != "wall"
"""In-process scenarios are timed in CPU seconds of this process unless
``BENCH_CLOCK=wall``: they are CPU-bound, so on an idle machine CPU time equals wall
time, and on a shared one it leaves out the time other processes held the cores."""


class timer:
    """``with timer(cpu=...) as t: ...`` then ``t.seconds``; collects garbage first so
    one scenario's leftovers are not paid for by the next.

    ``cpu=True`` (for CPU-bound, in-process scenarios) measures the process's CPU time
    (all its threads) when :data:`CPU_CLOCK` allows; otherwise wall time. Scenarios
    that wait on a server are always timed by the wall clock.
    """

    seconds: float = 0.0

    def __init__(self, *, cpu: bool = False) -> None:
        self._clock = time.process_time if cpu and CPU_CLOCK else time.perf_counter

    def __enter__(self) -> timer:
        gc.collect()
        self._start = self._clock()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = self._clock() - self._start


async def in_flight(count: int, limit: int, one: Callable[[int], Awaitable[Any]]) -> None:
    """Run ``one(i)`` for i < count with at most ``limit`` running at a time."""
    next_index = 0

    async def lane() -> None:
        nonlocal next_index
        while next_index < count:
            i = next_index
            next_index += 1
            await one(i)

    await asyncio.gather(*(lane() for _ in range(min(limit, count))))


async def drive_http(
    app: Any, requests: int, limit: int, path: str = "/jobs", *, cpu: bool = False
) -> float:
    """POST ``requests`` times to ``app`` through httpx's ASGI transport, ``limit`` in
    flight; return requests per second (after 50 warm-up requests)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

        async def post(_: int) -> None:
            response = await client.post(path)
            if response.status_code != 200:
                raise RuntimeError(f"POST {path}: {response.status_code} {response.text}")

        await in_flight(50, limit, post)
        with timer(cpu=cpu) as t:
            await in_flight(requests, limit, post)
    return requests / t.seconds


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux ``/proc``)."""
    gc.collect()
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")
