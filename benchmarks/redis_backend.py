"""Benchmark the Redis backend: task lifecycles per second and Redis commands per lifecycle.

Runs N task lifecycles through ``taskflow_redis.RedisBackend`` the way the engine drives
a backend, with C lifecycles in flight at once, in four scenarios:

* ``lease``:  create -> acquire_lease -> transition RUNNING -> transition SUCCESS ->
  release_lease (a task started right after the response);
* ``claim``:  create -> enqueue -> claim -> transition RUNNING -> transition SUCCESS ->
  release_lease (a task taken off a shared queue);
* ``lease+events`` / ``claim+events``: the same, publishing the lifecycle events
  (RUNNING and SUCCESS) as the engine does;
* ``floor``: five no-op ``EVALSHA`` calls per "lifecycle" — the cost of five round trips
  through redis-py's asyncio client alone, for comparison.

Commands are read from ``INFO commandstats`` before and after each scenario. Redis
counts the commands a Lua script runs as well as the ``EVALSHA`` itself, so the report
splits them: *round trips* are the commands the client sent (``EVALSHA``, ``PUBLISH``
...), *server commands* include the work done inside the scripts.

By default the benchmark starts a private ``redis-server`` on a free port (so nothing
else pollutes the counters); ``--url`` uses an existing server instead.

    python benchmarks/redis_backend.py --tasks 5000 --concurrency 50
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from redis.asyncio import Redis

from fastapi_taskflow.clock import SystemClock
from fastapi_taskflow.events import LifecycleEvent
from fastapi_taskflow.models import TaskRecord, TaskStatus, TaskUpdate
from taskflow_redis import RedisBackend

CLIENT_COMMANDS = {"evalsha", "eval", "publish", "hlen", "ping"}
"""Commands the backend sends itself; everything else in commandstats ran inside scripts."""

Lifecycle = Callable[[RedisBackend, int], Awaitable[None]]


@contextmanager
def private_server() -> Iterator[str]:
    """Start a throw-away redis-server on a free loopback port; yield its URL."""
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed; pass --url to use a running server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    workdir = tempfile.mkdtemp(prefix="taskflow-bench-")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the private redis-server did not start within 15s") from None
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def _record(backend: RedisBackend, n: int) -> TaskRecord:
    now = backend.clock.now()
    return TaskRecord(
        task_id=f"bench-{n}-{uuid.uuid4().hex[:8]}",
        func_name="bench.noop",
        created_at=now,
        updated_at=now,
        args=[n],
        kwargs={"to": "user@example.com"},
        tags={"bench": "yes"},
    )


def _event(record: TaskRecord, status: TaskStatus, backend: RedisBackend) -> LifecycleEvent:
    return LifecycleEvent(
        task_id=record.task_id,
        func_name=record.func_name,
        timestamp=backend.clock.now(),
        status=status,
        tags=record.tags,
    )


async def _run_and_finish(backend: RedisBackend, task_id: str, owner: str, events: bool) -> None:
    """RUNNING -> SUCCESS -> release, publishing events from the records transitions return."""
    now = backend.clock.now()
    running = await backend.transition(
        task_id,
        expected=[TaskStatus.PENDING],
        new=TaskStatus.RUNNING,
        update=TaskUpdate(started_at=now, attempt=1, owner=owner),
    )
    assert running is not None
    if events:
        await backend.publish(_event(running, TaskStatus.RUNNING, backend))
    done = await backend.transition(
        task_id,
        expected=[TaskStatus.RUNNING],
        new=TaskStatus.SUCCESS,
        update=TaskUpdate(finished_at=backend.clock.now(), result=None),
    )
    assert done is not None
    if events:
        await backend.publish(_event(done, TaskStatus.SUCCESS, backend))
    assert await backend.release_lease(task_id, owner=owner)


def floor_lifecycle() -> Lifecycle:
    """Five no-op ``EVALSHA`` calls: what redis-py itself costs for five round trips."""

    async def lifecycle(backend: RedisBackend, n: int) -> None:
        script = backend.client.register_script("return 1")
        for _ in range(5):
            await script(keys=[backend._keys.seq], args=[n])

    return lifecycle


def lease_lifecycle(events: bool) -> Lifecycle:
    """create -> acquire_lease -> RUNNING -> SUCCESS -> release_lease."""

    async def lifecycle(backend: RedisBackend, n: int) -> None:
        record = _record(backend, n)
        assert (await backend.create(record)).created
        assert await backend.acquire_lease(record.task_id, owner="bench", lease_seconds=30)
        await _run_and_finish(backend, record.task_id, "bench", events)

    return lifecycle


def claim_lifecycle(events: bool) -> Lifecycle:
    """create -> enqueue -> claim -> RUNNING -> SUCCESS -> release_lease.

    The claim may hand this worker another worker's task (the queue is shared); it runs
    whichever task it got, as the engine does.
    """

    async def lifecycle(backend: RedisBackend, n: int) -> None:
        record = _record(backend, n)
        assert (await backend.create(record)).created
        await backend.enqueue(record.task_id, queue="bench")
        claims = await backend.claim(queue="bench", owner="bench", lease_seconds=30)
        assert claims, "the queue was empty"
        await _run_and_finish(backend, claims[0].task_id, "bench", events)

    return lifecycle


async def commandstats(client: Redis) -> dict[str, int]:
    """Return ``{command: calls}`` from ``INFO commandstats``."""
    info: dict[str, Any] = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}


async def scenario(
    url: str, name: str, lifecycle: Lifecycle, tasks: int, concurrency: int
) -> dict[str, Any]:
    """Run ``tasks`` lifecycles, ``concurrency`` at a time; return the measurements."""
    backend = RedisBackend(url, prefix=f"bench-{uuid.uuid4().hex[:8]}", clock=SystemClock())
    await backend.open()
    admin = Redis.from_url(url)
    try:
        for n in range(min(concurrency, tasks)):  # warm up connections and scripts
            await lifecycle(backend, -n - 1)
        before = await commandstats(admin)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(tasks):
            queue.put_nowait(n)

        async def worker() -> None:
            while not queue.empty():
                await lifecycle(backend, queue.get_nowait())

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        after = await commandstats(admin)
    finally:
        await backend.delete_all()
        await backend.close()
        await admin.aclose()
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    delta.pop("info", None)
    delta = {k: v for k, v in delta.items() if v > 0}
    trips = sum(v for k, v in delta.items() if k in CLIENT_COMMANDS)
    return {
        "name": name,
        "tasks": tasks,
        "seconds": elapsed,
        "tasks_per_s": tasks / elapsed,
        "round_trips_per_task": trips / tasks,
        "server_commands_per_task": sum(delta.values()) / tasks,
        "client_commands": {k: v / tasks for k, v in delta.items() if k in CLIENT_COMMANDS},
    }


def report(rows: list[dict[str, Any]], concurrency: int) -> None:
    """Print one line per scenario."""
    print(f"\n{concurrency} lifecycles in flight; per task lifecycle:")
    print(f"{'scenario':<16}{'tasks/s':>10}{'round trips':>13}{'server cmds':>13}  client commands")
    for row in rows:
        mix = ", ".join(f"{k} {v:g}" for k, v in sorted(row["client_commands"].items()))
        print(
            f"{row['name']:<16}{row['tasks_per_s']:>10.0f}{row['round_trips_per_task']:>13.2f}"
            f"{row['server_commands_per_task']:>13.1f}  {mix}"
        )


async def main(url: str, tasks: int, concurrency: int) -> None:
    """Run every scenario against ``url`` and print the report."""
    scenarios = [
        ("lease", lease_lifecycle(False)),
        ("claim", claim_lifecycle(False)),
        ("lease+events", lease_lifecycle(True)),
        ("claim+events", claim_lifecycle(True)),
        ("floor (5 no-op)", floor_lifecycle()),
    ]
    rows = [await scenario(url, name, fn, tasks, concurrency) for name, fn in scenarios]
    report(rows, concurrency)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="use this Redis instead of starting a private one")
    parser.add_argument("--tasks", type=int, default=5000, help="lifecycles per scenario")
    parser.add_argument("--concurrency", type=int, default=50, help="lifecycles in flight")
    options = parser.parse_args()
    if options.url:
        asyncio.run(main(options.url, options.tasks, options.concurrency))
    else:
        with private_server() as private_url:
            asyncio.run(main(private_url, options.tasks, options.concurrency))
