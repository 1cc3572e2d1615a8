"""Private, restartable Redis and PostgreSQL servers for the outage tests.

Each server runs on a free loopback port in a temporary directory of its own (the
machine's shared servers are never touched) and can be stopped and started again with
its data kept:

* :class:`RedisServer`: ``redis-server`` with an fsync'd append-only file (a Redis that
  restarts empty has forgotten every acknowledged task);
* :class:`PostgresServer`: a fresh cluster (``initdb``, trust auth), ``pg_ctl`` start/stop;
* :func:`private_redis` / :func:`private_postgres`: context managers that create one
  (started or not), and remove it and its directory afterwards. They skip the test when
  the binaries are missing, or fail it when ``TASKFLOW_REQUIRE_SERVICES=1``.

Used by ``test_outages.py`` and ``test_liveness.py``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from fastapi_taskflow.testing.services import service_missing

PG_BIN = Path(os.environ.get("TASKFLOW_PG_BIN", "/usr/lib/postgresql/15/bin"))

__all__ = [
    "PG_BIN",
    "PostgresServer",
    "RedisServer",
    "StoreServer",
    "free_port",
    "private_postgres",
    "private_redis",
    "wait_port",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, timeout: float) -> None:
    """Return once something accepts connections on ``port``; TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


class StoreServer(Protocol):
    """A store a test can stop and start again."""

    url: str

    def start(self) -> None: ...

    def stop(self) -> None: ...


class RedisServer:
    """A private redis-server with an fsync'd append-only file, restartable."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it (again) and wait until it accepts connections."""
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "yes", "--appendfsync", "always"),
                *("--dir", str(self.dir), "--daemonize", "no", "--logfile", "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, 10)

    def freeze(self) -> None:
        """Stop the server's process without ending it (SIGSTOP): connections are still
        accepted by the kernel, but no command is ever answered until :meth:`thaw`."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Let a frozen server run again (SIGCONT); no-op when it is not running."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Shut it down (the AOF is flushed); no-op when it is not running."""
        self.thaw()  # a frozen server would not take the SIGTERM
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()  # SHUTDOWN: the AOF is flushed
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class PostgresServer:
    """A private PostgreSQL cluster (trust auth, loopback only), restartable."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.data = directory / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.running = False
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(directory, "postgres", "postgres")
        self._run(PG_BIN / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres")

    def _run(self, *argv: object) -> None:
        command = [str(arg) for arg in argv]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")

    def start(self) -> None:
        """Start it (again) and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=on"
        self._run(
            *(PG_BIN / "pg_ctl", "start", "-w", "-t", "30", "-D", self.data),
            *("-l", self.dir / "postgres.log", "-o", options),
        )
        self.running = True
        wait_port(self.port, 10)

    def stop(self) -> None:
        """Stop it (``-m fast``: sessions are disconnected); no-op when not running."""
        if not self.running:
            return
        self.running = False
        self._run(PG_BIN / "pg_ctl", "stop", "-w", "-t", "30", "-m", "fast", "-D", self.data)


@contextlib.contextmanager
def private_redis(start: bool) -> Iterator[RedisServer]:
    """A private Redis (started if ``start``), removed with its directory afterwards."""
    if shutil.which("redis-server") is None:
        service_missing("redis-server is not on PATH")
    directory = Path(tempfile.mkdtemp(prefix="taskflow-outage-redis-"))
    server = RedisServer(directory)
    try:
        if start:
            server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def private_postgres(start: bool) -> Iterator[PostgresServer]:
    """A private PostgreSQL (started if ``start``), removed with its directory afterwards."""
    if not (PG_BIN / "pg_ctl").exists() or not (PG_BIN / "initdb").exists():
        service_missing(f"PostgreSQL binaries not found in {PG_BIN} (set TASKFLOW_PG_BIN)")
    directory = Path(tempfile.mkdtemp(prefix="taskflow-outage-pg-"))
    directory.chmod(0o755)
    server: PostgresServer | None = None
    try:
        server = PostgresServer(directory)
        if start:
            server.start()
        yield server
    finally:
        if server is not None:
            with contextlib.suppress(Exception):
                server.stop()
        shutil.rmtree(directory, ignore_errors=True)
