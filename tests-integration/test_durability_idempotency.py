"""Idempotency keys under a real race: 4 processes x 250 concurrent ``add_task`` calls.

Four uvicorn instances of ``durability_app`` share one backend (SQLite file, PostgreSQL,
MySQL/MariaDB, Redis). Each gets 250 concurrent requests, 1,000 in all, over 50
idempotency keys: half the keys on the Starlette path (run after the response), half
through the priority queue. Exactly 50 tasks exist afterwards, every request for a key
got that key's task id, and the run log shows exactly 50 executions, one per key.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import instances  # tests-integration/ is on sys.path (pytest's pythonpath option)

durable_backend = instances.durable_backend
Backend = instances.Backend

PROCESSES = 4
CALLS = 250
KEYS = 50


def _item(n: int) -> dict[str, object]:
    key = n % KEYS
    item: dict[str, object] = {"func": "record", "label": f"key-{key}", "key": f"key-{key}"}
    if key % 2:
        item.update(route="queued", priority=key % 3)
    return item


async def _race(urls: list[str]) -> list[tuple[int, str]]:
    """Send CALLS concurrent requests to every instance; return ``(n, task_id)``."""
    import httpx

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)

    async def one(client: httpx.AsyncClient, n: int) -> tuple[int, str]:
        response = await client.post("/tasks", json={"items": [_item(n)]})
        assert response.status_code == 200, response.text
        ids: list[str] = response.json()["ids"]
        return n, ids[0]

    clients = [httpx.AsyncClient(base_url=u, timeout=60, limits=limits) for u in urls]
    try:
        calls = [
            one(client, p * CALLS + n) for n in range(CALLS) for p, client in enumerate(clients)
        ]
        return await asyncio.gather(*calls)
    finally:
        for client in clients:
            await client.aclose()


def test_four_processes_race_on_fifty_keys(durable_backend: Backend) -> None:
    started = time.monotonic()
    # No instance dies here, so the liveness period is long: under this load a 1 s period
    # can pass without a heartbeat landing (it waits for a pooled connection), and another
    # instance would then take the owner for dead.
    fleet = instances.start(
        durable_backend,
        *(f"P{n}" for n in range(PROCESSES)),
        DURABILITY_LIVENESS_SECONDS="5",
    )
    try:
        results = asyncio.run(_race([i.base_url for i in fleet]))
        raced = time.monotonic() - started
        assert len(results) == PROCESSES * CALLS

        holders: dict[str, set[str]] = {}
        for n, task_id in results:
            holders.setdefault(f"key-{n % KEYS}", set()).add(task_id)
        assert len(holders) == KEYS
        split = {key: ids for key, ids in holders.items() if len(ids) != 1}
        assert not split, f"a key got several tasks: {split}"
        ids = [next(iter(ids)) for ids in holders.values()]

        final = instances.poll(
            lambda: instances.all_terminal(fleet[0], ids), 60, "all 50 tasks finished"
        )
        assert set(final.values()) == {"success"}, (
            Counter(final.values()),
            instances.diagnose(fleet),
        )
        with fleet[0].client() as client:
            stats = client.get("/stats").json()
        assert stats["total"] == KEYS, stats  # no other task exists that could still run

        runs = durable_backend.count("ran")
        assert runs == Counter({f"key-{k}": 1 for k in range(KEYS)}), runs
        where = Counter(inst for ev, _, inst in durable_backend.runs() if ev == "ran")
    finally:
        for instance in fleet:
            instance.stop()
    print(
        f"\n[{durable_backend.kind}] {PROCESSES}x{CALLS} keyed adds in {raced:.1f}s, "
        f"runs per instance {dict(where)}, total {time.monotonic() - started:.1f}s"
    )
