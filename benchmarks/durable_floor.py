"""How fast S2 could be on a durable backend whose writes cost nothing.

    nox -s bench -- benchmarks/durable_floor.py [--requests 3000] [--rounds 5]

Runs issue 10's S2 (POSTs through httpx's ``ASGITransport``, 32 in flight, one no-op
task each) three ways in one process, interleaved, and prints the medians as a ratio
of memory's:

* ``memory``: the in-process store (no write buffer, no group commit);
* ``sqlite, free writes``: the SQLite backend with ``create_many``,
  ``transition_many`` and ``write_many`` answering at once, without SQL: everything
  the engine does for a durable store (the write buffer, the response held until its
  records are written, the start and the finish awaited through the group commit)
  and nothing the store does;
* ``sqlite``: the real thing.

The second line is the floor for the target "S2 on a durable backend at least 0.8 of
S2 on memory": no store, however fast, does better than the engine's own part of it. With
``--gc`` it also prints the time of the garbage collector's young collections per
request (the requests held while their writes are in flight make each one walk their
coroutines).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import impl_taskflow

from fastapi_taskflow.models import APPLIED, CreateResult, TaskRecord, Transition, construct
from taskflow_sql import SQLBackend

_WRITES = ("create_many", "transition_many", "write_many")


async def _created(self: SQLBackend, records: Sequence[TaskRecord]) -> list[CreateResult]:
    return [construct(CreateResult, record=record, created=True) for record in records]


async def _moved(self: SQLBackend, changes: Sequence[Transition]) -> list[Any]:
    # read_back=False (nobody listens for events here): APPLIED, as a store would answer
    return [APPLIED if not change.read_back else None for change in changes]


async def _written(
    self: SQLBackend, records: Sequence[TaskRecord], changes: Sequence[Transition]
) -> tuple[list[CreateResult], list[Any]]:
    return await _created(self, records), await _moved(self, changes)


class FreeWrites:
    """While entered, the SQL backend's batch writes answer at once, without SQL."""

    def __enter__(self) -> None:
        self.saved = {name: SQLBackend.__dict__.get(name) for name in _WRITES}
        for name, fake in zip(_WRITES, (_created, _moved, _written), strict=True):
            setattr(SQLBackend, name, fake)
        self.check = impl_taskflow._check
        impl_taskflow._check = _no_check  # nothing was stored to count

    def __exit__(self, *exc: object) -> None:
        for name, saved in self.saved.items():
            if saved is None:
                delattr(SQLBackend, name)
            else:
                setattr(SQLBackend, name, saved)
        impl_taskflow._check = self.check


async def _no_check(tm: Any, expected: int) -> None:
    return None


class GCTimer:
    """Seconds the garbage collector's young collections (generations 0 and 1) ran while
    installed; full collections are left out (the harness forces one before timing)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] == 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started


async def main(requests: int, rounds: int, with_gc: bool) -> None:
    ways = (
        ("memory", "memory", False),
        ("sqlite, free writes", "sqlite", True),
        ("sqlite", "sqlite", False),
    )
    rates: dict[str, list[float]] = {name: [] for name, _, _ in ways}
    collecting: dict[str, list[float]] = {name: [] for name, _, _ in ways}
    for _ in range(rounds):
        for name, backend, free in ways:
            timer = GCTimer()
            gc.collect()
            gc.callbacks.append(timer)
            try:
                if free:
                    with FreeWrites():
                        rate = await impl_taskflow.s2(requests, 32, backend)
                else:
                    rate = await impl_taskflow.s2(requests, 32, backend)
            finally:
                gc.callbacks.remove(timer)
            rates[name].append(rate)
            # the collector's time over the whole run (its 50 warm-ups included)
            collecting[name].append(timer.seconds / (requests + 50) * 1e6)
            print(f"  {name:20} {rate:8,.0f} req/s", flush=True)
    memory = statistics.median(rates["memory"])
    print(f"\nS2, {requests:,} requests, 32 in flight; medians of {rounds} rounds")
    for name, values in rates.items():
        rate = statistics.median(values)
        line = f"{name:20} {rate:8,.0f} req/s  {rate / memory:.2f}x memory"
        if with_gc:
            line += f"  young GC {statistics.median(collecting[name]):5.1f} µs/request"
        print(line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--gc", action="store_true", help="also time the garbage collector")
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds, args.gc))
