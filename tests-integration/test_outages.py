"""The store restarts under a steady load of enqueues; the engine rides it out.

Each test starts its own Redis or PostgreSQL on a free loopback port in a temporary
directory (the machine's shared servers are never touched), runs ``outage_app.py`` under
uvicorn against it, sends a few enqueue requests every 10 ms, restarts the server in the
middle of the load, and keeps the load going. Then:

* every acknowledged task (a 200 carrying its id) reaches SUCCESS and ran exactly once;
* refused requests (a 503, or a 500) are allowed, during the outage only in effect, but
  never required (timing is not asserted);
* the app process is the same one throughout and accepts tasks again afterwards.

Redis must persist for this guarantee (here ``appendonly yes``, ``appendfsync always``):
a Redis that restarts empty has forgotten every acknowledged task.

The tests skip when ``redis-server`` or the PostgreSQL binaries are missing, unless
``TASKFLOW_REQUIRE_SERVICES=1``, which turns the skip into a failure.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from store_servers import (
    PostgresServer,
    RedisServer,
    StoreServer,
    private_postgres,
    private_redis,
)

HERE = Path(__file__).resolve().parent
TERMINAL = {"success", "failed", "interrupted", "rejected", "cancelled"}

LOAD_BEFORE = 2.0  # seconds of load before the restart
DOWN_FOR = 1.5  # seconds the server stays down
LOAD_AFTER = 2.5  # seconds of load after the server is back
BURST = 3  # requests per tick
TICK = 0.01


_redis = private_redis
_postgres = private_postgres


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with _redis(start=True) as server:
        yield server


@pytest.fixture
def postgres_server() -> Iterator[PostgresServer]:
    with _postgres(start=True) as server:
        yield server


class App:
    """``outage_app`` under uvicorn in a subprocess."""

    def __init__(self, backend_url: str, runs: Path) -> None:
        self.runs = runs
        env = dict(
            os.environ,
            TASKFLOW_BACKEND=backend_url,
            OUTAGE_RUNS=str(runs),
            OUTAGE_LIVENESS="3",
            PYTHONUNBUFFERED="1",
        )
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "outage_app:app", "--app-dir", str(HERE)),
                *("--host", "127.0.0.1", "--port", "0", "--lifespan", "on"),
                *("--log-level", "info", "--no-access-log", "--timeout-keep-alive", "120"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.log: list[str] = []
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.log.append(line)
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        self.url = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not self.url:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            found = re.search(r"Uvicorn running on (http://\S+)", line)
            if found:
                self.url = found.group(1)
        if not self.url:
            self.stop()
            pytest.fail(f"uvicorn did not start outage_app:\n{''.join(self.log)}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def runs_by_id(self) -> Counter[str]:
        if not self.runs.exists():
            return Counter()
        return Counter(line for line in self.runs.read_text().split("\n") if line)


def _run_app(backend_url: str, tmp_path: Path) -> Iterator[App]:
    app = App(backend_url, tmp_path / "runs.txt")
    try:
        yield app
    finally:
        app.stop()
        print("".join(app.log[-80:]))  # shown when the test fails


@dataclass
class LoadResult:
    acknowledged: dict[str, str] = field(default_factory=dict)  # task id -> route
    refused: Counter[str] = field(default_factory=Counter)  # status/error -> count
    sent: int = 0
    slowest: float = 0.0  # seconds, the longest answer


async def _enqueue(client: httpx.AsyncClient, n: int, result: LoadResult) -> None:
    path = "/enqueue" if n % 2 else "/enqueue-queued"
    result.sent += 1
    began = time.monotonic()
    try:
        response = await client.post(path, params={"n": n})
    except httpx.HTTPError as exc:
        result.refused[type(exc).__name__] += 1
        return
    finally:
        result.slowest = max(result.slowest, time.monotonic() - began)
    if response.status_code == 200:
        result.acknowledged[response.json()["task_id"]] = path
    else:
        assert response.status_code in (500, 503), response.text
        # add_task() refused at once (the store is known down), or the middleware could
        # not write the request's tasks before the response
        how = "add_task" if "a route can answer 503" in response.text else "write"
        result.refused[f"{response.status_code} {how}"] += 1


async def _load(client: httpx.AsyncClient, seconds: float, result: LoadResult) -> None:
    """``BURST`` enqueues every ``TICK`` seconds for ``seconds``; waits for the answers."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    inflight: set[asyncio.Task[None]] = set()
    n = result.sent
    while loop.time() < end:
        for _ in range(BURST):
            n += 1
            task = asyncio.create_task(_enqueue(client, n, result))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        await asyncio.sleep(TICK)
    if inflight:
        await asyncio.gather(*inflight)


async def _restart_under_load(app: App, server: StoreServer) -> tuple[LoadResult, float]:
    result = LoadResult()
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    timeout = httpx.Timeout(20.0)
    async with httpx.AsyncClient(base_url=app.url, limits=limits, timeout=timeout) as client:
        pid = (await client.get("/pid")).json()["pid"]

        async def restart() -> None:
            await asyncio.sleep(LOAD_BEFORE)
            await asyncio.to_thread(server.stop)
            await asyncio.sleep(DOWN_FOR)
            await asyncio.to_thread(server.start)

        started = time.monotonic()
        await asyncio.gather(restart(), _load(client, LOAD_BEFORE + DOWN_FOR + LOAD_AFTER, result))
        load_time = time.monotonic() - started

        # The engine was never restarted, none of its loops died, and it accepts again.
        assert app.process.poll() is None, "".join(app.log)
        assert "taskflow engine task failed" not in "".join(app.log), "".join(app.log)
        assert (await client.get("/pid")).json()["pid"] == pid
        after = LoadResult()
        deadline = time.monotonic() + 15
        while len(after.acknowledged) < 10 and time.monotonic() < deadline:
            await _enqueue(client, len(after.acknowledged) * 2 + 1, after)
            await _enqueue(client, len(after.acknowledged) * 2 + 2, after)
            await asyncio.sleep(0.05)
        assert len(after.acknowledged) >= 10, f"not accepting after the restart: {after}"
        result.acknowledged.update(after.acknowledged)

        # Every acknowledged task ran exactly once and is SUCCESS in the store.
        ids = set(result.acknowledged)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if ids <= set(app.runs_by_id()):
                break
            await asyncio.sleep(0.2)
        runs = app.runs_by_id()
        never = ids - set(runs)
        assert not never, (
            f"{len(never)} of {len(ids)} acknowledged tasks never ran, e.g. "
            f"{sorted(never)[:3]} ({[result.acknowledged[i] for i in sorted(never)[:3]]})\n"
            + "".join(app.log[-60:])
        )
        twice = {task_id: count for task_id, count in runs.items() if count > 1}
        assert not twice, f"ran more than once: {twice}"

        statuses: dict[str, str | None] = {}
        deadline = time.monotonic() + 20
        todo = set(ids)
        while todo and time.monotonic() < deadline:
            for chunk in _chunks(sorted(todo), 50):
                answers = await asyncio.gather(*(client.get(f"/tasks/{i}") for i in chunk))
                for task_id, answer in zip(chunk, answers, strict=True):
                    if answer.status_code == 200:
                        statuses[task_id] = answer.json()["status"]
            todo = {i for i in ids if statuses.get(i) not in TERMINAL}
            if todo:
                await asyncio.sleep(0.2)
        assert not todo, f"not terminal: {Counter(statuses.get(i) for i in todo)}"
        assert Counter(statuses.values()) == Counter({"success": len(ids)})
    _assert_no_address_logged(app)
    return result, load_time


def _assert_no_address_logged(app: App) -> None:
    """The outage was logged, and no line of the app's log names the store's address
    (uvicorn's own line, the app's address, is the only one allowed to)."""
    log = "".join(app.log)
    assert "unreachable" in log, log
    named = [line for line in app.log if "127.0.0.1" in line and "Uvicorn running" not in line]
    assert not named, "".join(named)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _report(name: str, result: LoadResult, load_time: float) -> None:
    print(
        f"\n{name}: {result.sent} requests in {load_time:.1f}s, "
        f"{len(result.acknowledged)} acknowledged, refused: {dict(result.refused)}, "
        f"slowest answer {result.slowest:.2f}s"
    )


@pytest.fixture
def app_on_redis(redis_server: RedisServer, tmp_path: Path) -> Iterator[App]:
    yield from _run_app(redis_server.url, tmp_path)


@pytest.fixture
def app_on_postgres(postgres_server: PostgresServer, tmp_path: Path) -> Iterator[App]:
    yield from _run_app(postgres_server.url, tmp_path)


def test_redis_restart_under_load(app_on_redis: App, redis_server: RedisServer) -> None:
    result, load_time = asyncio.run(_restart_under_load(app_on_redis, redis_server))
    _report("redis", result, load_time)
    assert result.acknowledged


def test_postgres_restart_under_load(app_on_postgres: App, postgres_server: PostgresServer) -> None:
    result, load_time = asyncio.run(_restart_under_load(app_on_postgres, postgres_server))
    _report("postgres", result, load_time)
    assert result.acknowledged


@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_a_store_down_at_boot_is_waited_for_without_a_restart(kind: str, tmp_path: Path) -> None:
    """The app starts while its store is down, answers the routes that do not enqueue,
    refuses enqueues with a 503, and works once the store comes up: same process."""
    servers = _redis(start=False) if kind == "redis" else _postgres(start=False)
    with servers as server:
        for app in _run_app(server.url, tmp_path):
            assert "unreachable at startup" in "".join(app.log), "".join(app.log)
            with httpx.Client(base_url=app.url, timeout=20) as client:
                pid = client.get("/pid").json()["pid"]
                refused = client.post("/enqueue", params={"n": 1})
                assert refused.status_code == 503, refused.text
                assert str(server.url.split(":")[-1].split("/")[0]) not in refused.text
                server.start()
                deadline = time.monotonic() + 30
                while (answer := client.post("/enqueue", params={"n": 2})).status_code != 200:
                    assert answer.status_code == 503, answer.text
                    assert time.monotonic() < deadline, "never accepted after the store came up"
                    time.sleep(0.1)
                task_id = answer.json()["task_id"]
                deadline = time.monotonic() + 30
                while client.get(f"/tasks/{task_id}").json()["status"] != "success":
                    assert time.monotonic() < deadline, "the accepted task never succeeded"
                    time.sleep(0.1)
                assert client.get("/pid").json()["pid"] == pid
                assert app.runs_by_id() == Counter({task_id: 1})
            assert "taskflow engine task failed" not in "".join(app.log)
            _assert_no_address_logged(app)
