"""Several OS processes racing on one Redis: idempotent creates and claims never double.

Each worker is a separate Python process (``redis_workers.py``) with its own connection;
all start together on a file signal. Needs Redis at ``TASKFLOW_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``); skipped without it unless ``TASKFLOW_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.models import TaskQuery, TaskRecord
from fastapi_taskflow.testing.services import service_missing

pytest.importorskip("taskflow_redis")
import redis

from taskflow_redis import RedisBackend

WORKERS = 4
PROCESS_DEADLINE = 60.0
WORKER_SCRIPT = Path(__file__).resolve().parent / "redis_workers.py"


@pytest.fixture(scope="module")
def redis_url() -> str:
    url = os.environ.get("TASKFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2) as client:
            client.ping()
    except redis.RedisError as exc:
        reason = f"no Redis at {url} ({exc}); set TASKFLOW_TEST_REDIS_URL"
        service_missing(reason)
    return url


@pytest.fixture
async def shared(redis_url: str) -> AsyncIterator[RedisBackend]:
    """A backend on a fresh prefix that the worker processes share; deleted afterwards."""
    backend = RedisBackend(redis_url, prefix=f"tfconc-{uuid.uuid4().hex[:12]}", clock=ManualClock())
    await backend.open()
    try:
        yield backend
    finally:
        await backend.delete_all()
        await backend.close()


def run_workers(mode: str, url: str, prefix: str, tmp_path: Path) -> list[object]:
    """Start the workers, release them together, and return each one's JSON output."""
    go = tmp_path / f"go-{mode}"
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER_SCRIPT), mode, url, prefix, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(WORKERS)
    ]
    deadline = time.monotonic() + PROCESS_DEADLINE
    while len(list(tmp_path.glob(f"{go.name}.ready-*"))) < WORKERS:
        crashed = [proc for proc in procs if proc.poll() is not None]
        assert not crashed, f"a worker exited early:\n{crashed[0].communicate()[1]}"
        assert time.monotonic() < deadline, "the workers did not all connect within 60s"
        time.sleep(0.005)
    go.touch()
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=PROCESS_DEADLINE)
            assert proc.returncode == 0, f"worker failed:\n{err}"
            outputs.append(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return outputs


@pytest.mark.anyio
async def test_concurrent_creates_with_50_keys_give_exactly_50_tasks(
    shared: RedisBackend, redis_url: str, tmp_path: Path
) -> None:
    outputs = run_workers("create", redis_url, shared.prefix, tmp_path)
    rows = [tuple(row) for output in outputs for row in output]  # type: ignore[attr-defined]
    assert len(rows) == WORKERS * 50
    created = [row for row in rows if row[1]]
    assert len(created) == 50
    assert len({row[0] for row in created}) == 50
    holders: dict[str, set[str]] = {}
    for key, _, holder in rows:
        holders.setdefault(key, set()).add(holder)
    assert all(len(ids) == 1 for ids in holders.values()), "processes disagree on a holder"
    stats = await shared.stats()
    assert stats.total == 50
    page = await shared.query(TaskQuery(limit=1000))
    assert len(page.items) == 50
    for key, ids in holders.items():
        found = await shared.find_by_key(key)
        assert found is not None and {found.task_id} == ids


@pytest.mark.anyio
async def test_concurrent_claimers_over_1000_tasks_claim_each_exactly_once(
    shared: RedisBackend, redis_url: str, tmp_path: Path
) -> None:
    now = shared.clock.now()
    ids = [f"job-{n:04d}" for n in range(1000)]
    await shared.create_many(
        [
            TaskRecord(task_id=task_id, func_name="tests.job", created_at=now, updated_at=now)
            for task_id in ids
        ]
    )
    for n, task_id in enumerate(ids):
        await shared.enqueue(task_id, queue="work", priority=n % 5)
    assert await shared.queue_length("work") == 1000
    outputs = run_workers("claim", redis_url, shared.prefix, tmp_path)
    claimed = Counter(task_id for output in outputs for task_id in output)  # type: ignore[attr-defined]
    doubled = [task_id for task_id, count in claimed.items() if count > 1]
    assert doubled == [], f"claimed more than once: {doubled[:10]}"
    assert set(claimed) == set(ids)
    busy = sum(1 for output in outputs if output)  # type: ignore[misc]
    print("claims per process:", [len(output) for output in outputs])  # type: ignore[arg-type]
    assert busy >= 2, f"only {busy} of {WORKERS} processes claimed anything: no real race"
    assert await shared.queue_length("work") == 0
