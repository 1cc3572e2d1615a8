"""One worker process of test_sql_concurrency.py (run as a script, not collected).

``python sql_workers.py URL PREFIX SCHEMA SIGNAL_DIR INDEX WORKERS`` opens its own
SQLBackend, meets the other workers at a file barrier, creates one task for each of 50
idempotency keys (in its own shuffled order), meets them again, then claims from the
shared queue until it is empty. Prints one JSON line: what it created and claimed.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path

from fastapi_taskflow.clock import SystemClock
from fastapi_taskflow.models import TaskRecord
from taskflow_sql import SQLBackend

KEYS = 50
QUEUE = "race"
BARRIER_DEADLINE = 40.0


def _barrier(folder: Path, name: str, index: int, workers: int) -> None:
    (folder / f"{name}-{index}").touch()
    deadline = time.monotonic() + BARRIER_DEADLINE
    while len(list(folder.glob(f"{name}-*"))) < workers:
        if time.monotonic() > deadline:
            raise SystemExit(f"worker {index}: barrier {name!r} not reached in time")
        time.sleep(0.005)


async def barrier(folder: Path, name: str, index: int, workers: int) -> None:
    """Wait (polling, with a deadline) until every worker has reached ``name``."""
    await asyncio.to_thread(_barrier, folder, name, index, workers)


async def main(url: str, prefix: str, schema: str, folder: Path, index: int, workers: int) -> None:
    clock = SystemClock()
    backend = SQLBackend(url, table_prefix=prefix, schema=schema or None, clock=clock)
    await backend.open()
    try:
        keys = [f"key-{n}" for n in range(KEYS)]
        random.Random(index).shuffle(keys)
        await barrier(folder, "start", index, workers)

        async def create(key: str) -> dict[str, object]:
            now = clock.now()
            record = TaskRecord(
                task_id=f"w{index}-{key}",
                func_name="race.create",
                idempotency_key=key,
                created_at=now,
                updated_at=now,
            )
            result = await backend.create(record)
            return {"key": key, "task_id": result.record.task_id, "created": result.created}

        created = await asyncio.gather(*(create(key) for key in keys))
        await barrier(folder, "claim", index, workers)
        claimed: list[str] = []
        while batch := await backend.claim(
            queue=QUEUE, owner=f"worker-{index}", limit=1 + index % 5
        ):
            claimed.extend(claim.task_id for claim in batch)
        print(json.dumps({"created": created, "claimed": claimed}))
    finally:
        await backend.close()


if __name__ == "__main__":
    url, prefix, schema, folder, index, workers = sys.argv[1:7]
    asyncio.run(main(url, prefix, schema, Path(folder), int(index), int(workers)))
