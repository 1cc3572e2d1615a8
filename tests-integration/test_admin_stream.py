"""The admin event stream over a real HTTP server (uvicorn): live, small, every instance.

The server runs in a thread of the test process; a second TaskManager on the same
SQLite file plays another instance. Every wait polls with a deadline.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from fastapi_taskflow import TaskManager, task_log
from fastapi_taskflow.admin import BasicLogin, TaskAdmin
from fastapi_taskflow.admin.stream import event_stream

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[1]

LIFECYCLE_KEYS = {
    "task_id",
    "func_name",
    "status",
    "attempt",
    "queue",
    "priority",
    "tags",
    "timestamp",
    "error",
    "progress",
    "instance",
}
LOG_KEYS = {"task_id", "func_name", "level", "message", "attempt", "timestamp"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _build(backend: str, auth: Any = None) -> tuple[FastAPI, TaskManager]:
    tm = TaskManager(backend=backend, poll_interval=0.05)

    @tm.task(name="stream.job")
    async def job(n: int) -> int:
        task_log("working", n=n)
        return n

    app = FastAPI(lifespan=tm.lifespan)
    TaskAdmin(app, tm, auth=auth)

    @app.post("/enqueue/{n}")
    async def enqueue(n: int) -> dict[str, str]:
        return {"task_id": tm.add_task(job, n, tags={"batch": "b"})}

    return app, tm


class Served:
    def __init__(self, app: FastAPI) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                pytest.fail("uvicorn did not start within 30 s")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@contextmanager
def serving(app: FastAPI) -> Iterator[Served]:
    served = Served(app)
    try:
        yield served
    finally:
        served.stop()


Seen = list[tuple[str, dict[str, Any], int]]


class Lines:
    """One line iterator per stream (httpx streams a response body only once)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.iterator = response.aiter_lines()

    def __aiter__(self) -> AsyncIterator[str]:
        return self.iterator


async def _messages(response: Lines) -> AsyncIterator[tuple[str, dict[str, Any], int]]:
    """Yield ``(event, data, size in bytes)`` per SSE message (comments skipped)."""
    kind, data, size = "", "", 0
    async for line in response:
        size += len(line.encode()) + 1
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "":
            if kind:
                yield kind, json.loads(data), size + 1
            kind, data, size = "", "", 0


async def _collect_until(
    response: Lines, done: Callable[[Seen], bool], timeout: float = 20
) -> Seen:
    seen: Seen = []
    with anyio.fail_after(timeout):
        async for message in _messages(response):
            seen.append(message)
            if done(seen):
                return seen
    pytest.fail(f"stream ended early after {seen}")


async def _connected(response: httpx.Response) -> Lines:
    """Wait for the stream's opening comment: from then on every event is delivered."""
    lines = Lines(response)
    with anyio.fail_after(20):
        async for line in lines:
            if line == ": connected":
                return lines
    pytest.fail("the stream ended before it opened")


def _finished(task_id: str, *, with_log: bool) -> Callable[[Seen], bool]:
    """Until the task's SUCCESS event (and, with ``with_log``, one of its log events:
    log events are delivered asynchronously, possibly after the status change)."""

    def done(seen: Seen) -> bool:
        success = any(
            k == "lifecycle" and d["task_id"] == task_id and d["status"] == "success"
            for k, d, _ in seen
        )
        log = any(k == "log" and d["task_id"] == task_id for k, d, _ in seen)
        return success and (log or not with_log)

    return done


async def test_stream_carries_only_what_changed() -> None:
    """A task enqueued after the stream opened shows up as small lifecycle and log events."""
    app, _ = _build("memory://")
    with serving(app) as served:
        async with (
            httpx.AsyncClient(base_url=served.url, timeout=30) as client,
            client.stream("GET", "/tasks/api/events") as stream,
        ):
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = await _connected(stream)
            task_id = (await client.post("/enqueue/7")).json()["task_id"]
            seen = await _collect_until(lines, _finished(task_id, with_log=True))
    mine = [(k, d, n) for k, d, n in seen if d["task_id"] == task_id]
    statuses = [d["status"] for k, d, _ in mine if k == "lifecycle"]
    assert statuses[-1] == "success" and "running" in statuses
    for kind, data, size in mine:
        assert set(data) == (LIFECYCLE_KEYS if kind == "lifecycle" else LOG_KEYS)
        assert size < 2048, f"one change cost {size} bytes"
    logs = [d for k, d, _ in mine if k == "log"]
    assert logs and logs[0]["message"] == "working" and logs[0]["func_name"] == "stream.job"
    lifecycle = next(d for k, d, _ in mine if k == "lifecycle")
    assert lifecycle["tags"] == {"batch": "b"} and lifecycle["queue"] == "default"


async def test_stream_shows_other_instances(tmp_path: Path) -> None:
    """Events of a task run by another instance (same SQLite file) reach the stream.

    The task's function is registered on the other instance only, so the served app,
    which polls the same queue, cannot be the one that runs it."""
    url = f"sqlite:///{tmp_path / 'tasks.db'}"
    app, _ = _build(url)
    other = TaskManager(backend=url, poll_interval=0.05)

    @other.task(name="stream.remote_job")
    async def job(n: int) -> int:
        return n

    with serving(app) as served:
        async with (
            httpx.AsyncClient(base_url=served.url, timeout=30) as client,
            client.stream("GET", "/tasks/api/events") as stream,
        ):
            lines = await _connected(stream)
            async with other:
                task_id = other.add_task(job, 1)
                seen = await _collect_until(lines, _finished(task_id, with_log=False))
    remote = [d for k, d, _ in seen if k == "lifecycle" and d["task_id"] == task_id]
    assert remote and all(d["instance"] == other.instance_id for d in remote)


async def test_stream_refused_without_login() -> None:
    auth = BasicLogin(username="admin", password="pw", secret="a secret of some length")
    app, _ = _build("memory://", auth=auth)
    with serving(app) as served:
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
            refused = await client.get("/tasks/api/events")
            assert refused.status_code == 401
            login = await client.post("/tasks/login", data={"username": "admin", "password": "pw"})
            assert login.status_code == 303
            async with client.stream("GET", "/tasks/api/events") as stream:
                assert stream.status_code == 200
                await _connected(stream)


async def test_stream_ends_after_its_lifetime() -> None:
    """A stream closes by itself after max_seconds (the browser reconnects)."""
    tm = TaskManager()
    chunks: list[bytes] = []
    async with tm:
        with anyio.fail_after(20):
            async for chunk in event_stream(tm, keepalive=0.2, max_seconds=1.5):
                chunks.append(chunk)
    assert chunks[0].startswith(b"retry: ") and b": connected" in chunks[0]
    assert b": keep-alive\n\n" in chunks[1:]


def test_open_stream_does_not_hold_graceful_shutdown(tmp_path: Path) -> None:
    """SIGINT to uvicorn with a dashboard stream open: the server still exits cleanly.

    (uvicorn waits for open connections before the app's shutdown; the stream notices the
    shutdown and ends, so the task manager's graceful shutdown runs.)
    """
    port = _free_port()
    log = (tmp_path / "uvicorn.log").open("wb")
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "examples.admin_metrics:app"),
            *("--app-dir", str(ROOT), "--host", "127.0.0.1", "--port", str(port)),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    headers = {"authorization": "Bearer scrape-token"}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/openapi.json", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                assert process.poll() is None and time.monotonic() < deadline, "no start"
                time.sleep(0.1)
        with httpx.stream("GET", f"{url}/tasks/api/events", headers=headers, timeout=60) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("retry: ")
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    output = (tmp_path / "uvicorn.log").read_text()
    assert "Application shutdown complete" in output, output
