"""The README's demo: on SQLite by default, and tasks survive a restart of the app."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(cwd: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "TASKFLOW_BACKEND"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.demo:app", "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return proc
        except httpx.TransportError:
            if proc.poll() is not None:
                raise AssertionError("the demo exited during startup") from None
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("the demo did not start within 30 s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_finished(base: str, task_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        record: dict[str, object] = httpx.get(f"{base}/tasks/{task_id}", timeout=5).json()
        if record["status"] not in ("pending", "running"):
            return record
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} did not finish within 30 s")


def test_demo_keeps_tasks_across_a_restart(tmp_path: Path) -> None:
    pytest.importorskip("taskflow_sql")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _start(tmp_path, port)
    try:
        index = httpx.get(f"{base}/").json()
        assert index["backend"] == "SQLBackend"
        # A browser opening the demo lands on the live dashboard.
        opened = httpx.get(f"{base}/", headers={"accept": "text/html"}, follow_redirects=True)
        assert opened.url.path == "/tasks/dashboard" and "dashboard/static/app.js" in opened.text
        report = httpx.post(f"{base}/report/42", params={"plan": "pro"}).json()["task_id"]
        invoice = httpx.post(f"{base}/invoice/7/send").json()["task_id"]
        assert httpx.post(f"{base}/invoice/7/send").json()["task_id"] == invoice
        finished = _wait_finished(base, report)
        assert finished["status"] == "success" and finished["tags"] == {
            "user_id": "42",
            "plan": "pro",
        }
        sent = _wait_finished(base, invoice)
        # the first attempt fails now and then on purpose; the retry then succeeds
        assert sent["status"] == "success", sent
        assert sent["result"] == "sent to billing+7@example.com"
        assert sent["idempotency_key"] == "invoice-7"
    finally:
        _stop(proc)
    assert (tmp_path / "taskflow-demo.db").exists()

    proc = _start(tmp_path, port)
    try:
        listed = {item["task_id"] for item in httpx.get(f"{base}/tasks").json()["items"]}
        assert {report, invoice} <= listed
        again = httpx.get(f"{base}/tasks/{report}").json()
        assert again["status"] == "success" and again["result"]["user_id"] == 42
        assert httpx.get(f"{base}/tasks/{invoice}").json()["status"] == "success"
        # The idempotency key is still held after the restart.
        assert httpx.post(f"{base}/invoice/7/send").json()["task_id"] == invoice
    finally:
        _stop(proc)
