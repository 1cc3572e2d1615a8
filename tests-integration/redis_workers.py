"""A worker process for test_redis_concurrency.py: races one operation against its peers.

Run as ``python redis_workers.py MODE URL PREFIX GO_FILE``. Once connected it creates
``GO_FILE.ready-<pid>`` and waits (with a deadline) until ``GO_FILE`` exists, so every
process starts together; then it prints a JSON result.

* ``create``: create a task for each of 50 idempotency keys (in a shuffled order);
  prints ``[[key, created, holder_task_id], ...]``.
* ``claim``: claim from queue ``work`` with 8 concurrent claimers until it is empty;
  prints the claimed task ids.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
import uuid
from pathlib import Path

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.models import TaskRecord
from taskflow_redis import RedisBackend

KEYS = 50
START_DEADLINE = 30.0


def wait_for_go(go_file: Path) -> None:
    """Say this process is ready, then wait for the start signal."""
    go_file.with_name(f"{go_file.name}.ready-{os.getpid()}").touch()
    deadline = time.monotonic() + START_DEADLINE
    while not go_file.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"no start signal ({go_file}) within {START_DEADLINE}s")
        time.sleep(0.002)


async def race_creates(backend: RedisBackend) -> list[tuple[str, bool, str]]:
    now = backend.clock.now()
    keys = [f"key-{n}" for n in range(KEYS)]
    random.shuffle(keys)

    async def one(key: str) -> tuple[str, bool, str]:
        record = TaskRecord(
            task_id=f"{os.getpid()}-{uuid.uuid4().hex}",
            func_name="tests.job",
            created_at=now,
            updated_at=now,
            idempotency_key=key,
        )
        result = await backend.create(record)
        return key, result.created, result.record.task_id

    return list(await asyncio.gather(*(one(key) for key in keys)))


async def race_claims(backend: RedisBackend) -> list[str]:
    claimed: list[str] = []
    owner = f"worker-{os.getpid()}"

    async def claimer() -> None:
        while True:
            batch = await backend.claim(queue="work", owner=owner, limit=random.randint(1, 4))
            if not batch:
                return
            claimed.extend(claim.task_id for claim in batch)

    await asyncio.gather(*(claimer() for _ in range(8)))
    return claimed


async def main(mode: str, url: str, prefix: str, go_file: Path) -> None:
    backend = RedisBackend(url, prefix=prefix, clock=ManualClock())
    await backend.open()
    try:
        wait_for_go(go_file)
        result: object
        if mode == "create":
            result = await race_creates(backend)
        elif mode == "claim":
            result = await race_claims(backend)
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    finally:
        await backend.close()
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])))
