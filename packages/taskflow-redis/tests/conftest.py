"""Fixtures: a real Redis (``TASKFLOW_TEST_REDIS_URL``) and a self-started 3-node cluster.

No Redis is mocked. When a server is missing the tests that need it are skipped with the
reason, unless ``TASKFLOW_REQUIRE_SERVICES=1``, which turns the skip into a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.models import TaskRecord, TaskStatus, TaskUpdate, Transition
from fastapi_taskflow.testing.services import service_missing
from taskflow_redis import RedisBackend

DEFAULT_URL = "redis://127.0.0.1:6379/0"
CLUSTER_NODES = 3
STARTUP_DEADLINE = 30.0


_unavailable = service_missing


def unique_prefix() -> str:
    """A key prefix no other test uses."""
    return f"tftest-{uuid.uuid4().hex[:12]}"


async def keys_matching(client: Any, pattern: str) -> set[bytes]:
    """The keys matching ``pattern``, each once: a SCAN may return a key twice while the
    server resizes its key table (other tests write to the same server meanwhile)."""
    return {key async for key in client.scan_iter(match=pattern)}


def record(clock: ManualClock, task_id: str, status: TaskStatus = TaskStatus.PENDING) -> TaskRecord:
    """A new record of ``task_id`` stamped with ``clock``'s time."""
    now = clock.now()
    return TaskRecord(
        task_id=task_id, func_name="tests.job", status=status, created_at=now, updated_at=now
    )


def start(task_id: str) -> Transition:
    """PENDING -> RUNNING, owned by "me"."""
    return Transition(
        task_id, frozenset({TaskStatus.PENDING}), TaskStatus.RUNNING, TaskUpdate(owner="me")
    )


def finish(task_id: str) -> Transition:
    """RUNNING -> SUCCESS with a result, released."""
    return Transition(
        task_id,
        frozenset({TaskStatus.RUNNING}),
        TaskStatus.SUCCESS,
        TaskUpdate(result=1, owner=None),
    )


@contextlib.asynccontextmanager
async def opened(backend: RedisBackend) -> AsyncIterator[RedisBackend]:
    """``backend`` opened for a test; its keys are deleted and it is closed afterwards."""
    await backend.open()
    try:
        yield backend
    finally:
        await backend.delete_all()
        await backend.close()


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio."""
    return "asyncio"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The URL of a running Redis; skips (or fails) when none answers."""
    url = os.environ.get("TASKFLOW_TEST_REDIS_URL", DEFAULT_URL)
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2) as client:
            client.ping()
    except redis.RedisError as exc:
        _unavailable(f"no Redis at {url} ({exc}); set TASKFLOW_TEST_REDIS_URL")
    return url


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock for the backend under test."""
    return ManualClock()


@pytest.fixture
async def backend(redis_url: str, clock: ManualClock) -> AsyncIterator[RedisBackend]:
    """A fresh backend on its own prefix; its keys are deleted afterwards."""
    async with opened(RedisBackend(redis_url, prefix=unique_prefix(), clock=clock)) as backend:
        yield backend


@pytest.fixture(scope="module")
def unix_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A redis-server of this module's own, listening only on a unix socket: for tests
    that read server-wide counters or pause, flush or kill clients."""
    if shutil.which("redis-server") is None:
        _unavailable("redis-server is not installed; cannot start a private Redis")
    workdir = tmp_path_factory.mktemp("redis-unix")
    path = workdir / "redis.sock"
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", str(path), "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 15
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        assert path.exists(), "redis-server did not create its unix socket within 15s"
        yield path
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _free_port() -> int:
    """A loopback port that is free, and whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port > 55000:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("found no free loopback port pair for a Redis Cluster node")


def _cli(port: int, *args: str) -> str:
    done = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return done.stdout + done.stderr


def _wait(what: str, check: object, deadline: float) -> None:
    assert callable(check)
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"Redis Cluster: {what} did not happen within {STARTUP_DEADLINE:.0f}s")


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[list[int]]:
    """Start a 3-node Redis Cluster on free loopback ports; yield the ports; kill it after."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        _unavailable("redis-server/redis-cli are not installed; cannot start a Redis Cluster")
    workdir = Path(tempfile.mkdtemp(prefix="taskflow-redis-cluster-"))
    ports = [_free_port() for _ in range(CLUSTER_NODES)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            procs.append(
                subprocess.Popen(
                    [
                        "redis-server",
                        "--port", str(port),
                        "--bind", "127.0.0.1",
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", str(workdir / f"nodes-{port}.conf"),
                        "--dir", str(workdir),
                        "--save", "",
                        "--appendonly", "no",
                        "--daemonize", "no",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
        deadline = time.monotonic() + STARTUP_DEADLINE
        for port in ports:
            _wait(f"node {port} answering PING", lambda p=port: "PONG" in _cli(p, "ping"), deadline)
        nodes = [f"127.0.0.1:{port}" for port in ports]
        created = subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *nodes,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=STARTUP_DEADLINE,
        )
        if created.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed: {created.stdout}{created.stderr}"
            )
        for port in ports:
            _wait(
                f"node {port} reporting cluster_state:ok",
                lambda p=port: "cluster_state:ok" in _cli(p, "cluster", "info"),
                deadline,
            )
        yield ports
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
