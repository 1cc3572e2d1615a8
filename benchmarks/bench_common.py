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


class timer:
    """``with timer() as t: ...`` then ``t.seconds``; collects garbage first so one
    scenario's leftovers are not paid for by the next."""

    seconds: float = 0.0

    def __enter__(self) -> timer:
        gc.collect()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start


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


async def drive_http(app: Any, requests: int, limit: int, path: str = "/jobs") -> float:
    """POST ``requests`` times to ``app`` through httpx's ASGI transport, ``limit`` in
    flight; return requests per second (after 50 warm-up requests)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

        async def post(_: int) -> None:
            response = await client.post(path)
            if response.status_code != 200:
                raise RuntimeError(f"POST {path}: {response.status_code} {response.text}")

        await in_flight(50, limit, post)
        with timer() as t:
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
