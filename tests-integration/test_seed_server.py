"""Seed apps under a real server: uvicorn in a subprocess, driven over TCP by httpx.

Here the response really leaves before the task runs, the app's lifespan really runs
(the "Adding tasks outside a route" startup handler), and the server shuts down cleanly.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

SEED_APPS = Path(__file__).resolve().parent / "seed_apps"

pytestmark = pytest.mark.anyio

WaitFor = Callable[..., Awaitable[Any]]


class Server:
    def __init__(self, process: subprocess.Popen[str], url: str, log: list[str]) -> None:
        self.process, self.url, self.log = process, url, log

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise


@pytest.fixture
def serve_seed(seed_backend_url: str) -> Iterator[Callable[[str], Server]]:
    """``serve_seed("name")`` runs ``seed_apps/name.py``'s ``app`` under uvicorn."""
    servers: list[Server] = []

    def serve(name: str) -> Server:
        env = dict(os.environ, TASKFLOW_BACKEND=seed_backend_url, PYTHONUNBUFFERED="1")
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", f"{name}:app", "--app-dir", str(SEED_APPS)),
                *("--host", "127.0.0.1", "--port", "0", "--lifespan", "on"),
            ],
            stderr=subprocess.STDOUT,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        lines: queue.Queue[str] = queue.Queue()
        log: list[str] = []

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                log.append(line)
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        server = Server(process, "", log)
        servers.append(server)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            found = re.search(r"Uvicorn running on (http://\S+)", line)
            if found:
                server.url = found.group(1)
                return server
        pytest.fail(f"uvicorn did not start {name}:\n{''.join(log)}")

    yield serve
    for server in servers:
        server.stop()


def assert_clean_exit(server: Server) -> None:
    code = server.stop()
    log = "".join(server.log)
    # uvicorn re-raises the SIGTERM it handled once it has shut down gracefully.
    assert code in (0, -signal.SIGTERM), log
    assert "Application shutdown complete" in log or "Finished server process" in log, log
    assert "Traceback" not in log, log
    assert "ERROR" not in log, log


async def test_storing_the_task_id_under_uvicorn(
    serve_seed: Callable[[str], Server], wait_for: WaitFor
) -> None:
    server = serve_seed("at_storing_task_id")
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.post("/report", params={"user_id": 5})
        assert response.status_code == 200
        task_id = response.json()["task_id"]

        async def success() -> dict[str, Any] | None:
            got = await client.get(f"/report/{task_id}")
            assert got.status_code == 200, got.text  # never 404 once the id was returned
            body: dict[str, Any] = got.json()
            return body if body["status"] == "success" else None

        body = await wait_for(success, timeout=10)
        assert body["func_name"] == "at_storing_task_id.generate_report"
        assert body["args"] == [5]
        assert body["result"] == {"user_id": 5, "rows": 3}
        assert (await client.get("/report/00000000-0000-0000-0000-000000000000")).status_code == 404
        assert (await client.get("/_glue/calls")).json() == [["generate_report", [5], {}]]
    assert_clean_exit(server)


async def test_adding_tasks_outside_a_route_under_uvicorn(
    serve_seed: Callable[[str], Server], wait_for: WaitFor
) -> None:
    server = serve_seed("at_outside_route")
    async with httpx.AsyncClient(base_url=server.url) as client:

        async def synced() -> list[dict[str, Any]] | None:
            records: list[dict[str, Any]] = (await client.get("/_glue/sync_database")).json()
            return records if records and records[0]["status"] == "success" else None

        (record,) = await wait_for(synced, timeout=10)
        assert record["func_name"] == "at_outside_route.sync_database"
        assert record["result"] == "synced"
    assert_clean_exit(server)
