"""Several OS processes racing on one SQL database: idempotent creates, exclusive claims.

For SQLite (one file), PostgreSQL and MySQL/MariaDB: four separate Python processes
(``sql_workers.py``), each with its own engine and pool, start together on a file
barrier. Concurrent creates with the same 50 idempotency keys must give exactly 50
tasks; concurrent claimers over 1,000 queued tasks must claim each exactly once.

Servers come from ``TASKFLOW_TEST_POSTGRES_URL`` / ``TASKFLOW_TEST_MYSQL_URL``; a
missing one skips its case, or fails it when ``TASKFLOW_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fastapi_taskflow.testing.services import service_missing

pytest.importorskip("taskflow_sql")

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from fastapi_taskflow.clock import SystemClock
from fastapi_taskflow.models import TaskRecord
from taskflow_sql import SQLBackend
from taskflow_sql.urls import parse_url

WORKERS = 4
KEYS = 50
QUEUED = 1000
PROCESS_DEADLINE = 60.0
WORKER_SCRIPT = Path(__file__).resolve().parent / "sql_workers.py"
SERVICES = {
    "postgres": ("TASKFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    "mysql": ("TASKFLOW_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
}


@dataclass(frozen=True)
class Place:
    url: str
    prefix: str
    schema: str | None


async def _probe(url: str) -> str | None:
    engine = create_async_engine(parse_url(url).url)
    try:
        async with engine.connect() as conn:
            await asyncio.wait_for(conn.execute(text("SELECT 1")), 5)
        return None
    except Exception as exc:
        return str(exc).splitlines()[0][:200]
    finally:
        await engine.dispose()


async def _drop(place: Place) -> None:
    target = parse_url(place.url)
    if target.kind == "sqlite":
        return
    engine = create_async_engine(target.url)
    try:
        async with engine.begin() as conn:
            if place.schema:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{place.schema}" CASCADE'))
            else:
                rows = await conn.execute(
                    text(
                        "SELECT table_name FROM information_schema.tables "
                        "WHERE table_schema = DATABASE() AND table_name LIKE :p"
                    ),
                    {"p": place.prefix.replace("_", "\\_") + "%"},
                )
                for (name,) in rows.all():
                    await conn.execute(text(f"DROP TABLE IF EXISTS `{name}`"))
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
async def place(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Place]:
    kind = request.param
    prefix = f"c{uuid.uuid4().hex[:10]}_"
    if kind == "sqlite":
        yield Place(f"sqlite:///{tmp_path / 'race.db'}", prefix, None)
        return
    env, default = SERVICES[kind]
    url = os.environ.get(env, default)
    problem = await _probe(url)
    if problem is not None:
        reason = f"no {kind} server at {url} ({problem}); set {env}"
        service_missing(reason)
    schema = f"tfc_{uuid.uuid4().hex[:10]}" if kind == "postgres" else None
    found = Place(url, prefix, schema)
    try:
        yield found
    finally:
        await _drop(found)


async def _prepare(place: Place) -> SQLBackend:
    """Create the schema and the 1,000 queued tasks the claimers race over."""
    clock = SystemClock()
    backend = SQLBackend(place.url, table_prefix=place.prefix, schema=place.schema, clock=clock)
    await backend.open()
    now = clock.now()
    ids = [f"queued-{n:04}" for n in range(QUEUED)]
    await backend.create_many(
        [TaskRecord(task_id=i, func_name="race.claim", created_at=now, updated_at=now) for i in ids]
    )
    await asyncio.gather(*(backend.enqueue(i, queue="race", priority=int(i[-1]) % 3) for i in ids))
    assert await backend.queue_length("race") == QUEUED
    return backend


@pytest.mark.anyio
async def test_processes_race_on_keys_and_claims(place: Place, tmp_path: Path) -> None:
    started = time.monotonic()
    backend = await _prepare(place)
    try:
        signals = tmp_path / "signals"
        signals.mkdir()
        workers = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                str(WORKER_SCRIPT),
                place.url,
                place.prefix,
                place.schema or "",
                str(signals),
                str(index),
                str(WORKERS),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for index in range(WORKERS)
        ]
        outputs = []
        for worker in workers:
            out, err = await asyncio.wait_for(worker.communicate(), PROCESS_DEADLINE)
            assert worker.returncode == 0, f"worker failed:\n{err.decode()}"
            outputs.append(json.loads(out.decode().strip().splitlines()[-1]))

        # Idempotent creates: one task per key, and every process was told which.
        results = [item for output in outputs for item in output["created"]]
        assert len(results) == WORKERS * KEYS
        holders: dict[str, set[str]] = {}
        for item in results:
            holders.setdefault(item["key"], set()).add(item["task_id"])
        assert all(len(ids) == 1 for ids in holders.values()), "a key got two tasks"
        assert len(holders) == KEYS
        assert sum(item["created"] for item in results) == KEYS
        for key, (task_id,) in holders.items():
            holder = await backend.find_by_key(key)
            assert holder is not None and holder.task_id == task_id
        stats = await backend.stats()
        assert stats.by_func["race.create"] == {"pending": KEYS}

        # Exclusive claims: each of the 1,000 queued tasks exactly once, over all workers.
        claimed = [task_id for output in outputs for task_id in output["claimed"]]
        doubles = [task_id for task_id, n in Counter(claimed).items() if n > 1]
        assert not doubles, f"claimed twice: {doubles[:5]}"
        assert len(claimed) == QUEUED
        assert await backend.queue_length("race") == 0
        assert sum(1 for output in outputs if output["claimed"]) >= 2, "no real contention"
    finally:
        await backend.close()
    assert time.monotonic() - started < PROCESS_DEADLINE
