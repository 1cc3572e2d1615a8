"""Helpers of the durability tests: isolated backends and real uvicorn instances.

Load it by path (pytest runs with ``--import-mode=importlib``)::

    instances = load_instances()  # see the test modules

* ``durable_backend``: a fixture parametrized over sqlite, postgres, mysql and redis,
  yielding an isolated URL (a tmp file, ``?schema=``, ``?table_prefix=``, ``?prefix=``)
  and removing what the test created afterwards. A server that does not answer skips
  its case with the reason, or fails it when ``TASKFLOW_REQUIRE_SERVICES=1``.
* :class:`Instance`: ``durability_app:app`` in its own ``python -m uvicorn`` process.
* :func:`poll`: wait for a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from fastapi_taskflow.testing.services import service_missing

HERE = Path(__file__).resolve().parent
BACKENDS = ["sqlite", "postgres", "mysql", "redis"]
SERVICES = {
    "postgres": ("TASKFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    "mysql": ("TASKFLOW_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
    "redis": ("TASKFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
}
START_DEADLINE = 30.0
TERMINAL = {"success", "failed", "interrupted", "cancelled", "rejected"}

_probed: dict[str, str | None] = {}


# -- backends ----------------------------------------------------------------------------


@dataclass
class Backend:
    """One test's isolated place on one backend."""

    kind: str
    url: str
    uid: str
    workdir: Path
    run_log: Path = field(init=False)
    release: Path = field(init=False)

    def __post_init__(self) -> None:
        self.run_log = self.workdir / "runs.log"
        self.release = self.workdir / "release"

    def runs(self) -> list[tuple[str, str, str]]:
        """The run log as ``(event, label, instance)`` lines."""
        if not self.run_log.exists():
            return []
        lines = self.run_log.read_text().splitlines()
        return [tuple(line.split(" ")) for line in lines if line]  # type: ignore[misc]

    def count(self, event: str) -> Counter[str]:
        """How many times each label logged ``event``."""
        return Counter(label for ev, label, _ in self.runs() if ev == event)

    def where(self, event: str, label: str) -> list[str]:
        """The instances on which ``label`` logged ``event``."""
        return [inst for ev, lab, inst in self.runs() if ev == event and lab == label]


def _probe_sql(url: str) -> str | None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from taskflow_sql.urls import parse_url

    async def probe() -> str | None:
        engine = create_async_engine(parse_url(url).url)
        try:
            async with engine.connect() as conn:
                await asyncio.wait_for(conn.execute(text("SELECT 1")), 5)
            return None
        except Exception as exc:
            return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        finally:
            await engine.dispose()

    return asyncio.run(probe())


def _probe_redis(url: str) -> str | None:
    import redis

    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2) as client:
            client.ping()
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _service_url(kind: str) -> str:
    env, default = SERVICES[kind]
    url = os.environ.get(env, default)
    if url not in _probed:
        try:
            _probed[url] = _probe_redis(url) if kind == "redis" else _probe_sql(url)
        except ImportError as exc:
            _probed[url] = f"driver or backend package missing: {exc}"
    problem = _probed[url]
    if problem is not None:
        reason = f"no {kind} server at {url} ({problem}); set {env}"
        service_missing(reason)
    return url


def _drop(kind: str, base: str, uid: str) -> None:
    if kind == "redis":
        import redis

        with redis.Redis.from_url(base) as client:
            keys = list(client.scan_iter(match=f"{{{uid}}}:*", count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
        return
    if kind == "postgres":
        import asyncpg

        async def drop_schema() -> None:
            conn = await asyncpg.connect(base.replace("postgresql://", "postgres://", 1))
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{uid}" CASCADE')
            finally:
                await conn.close()

        asyncio.run(drop_schema())
        return
    if kind == "mysql":
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine

        from taskflow_sql.urls import parse_url

        async def drop_tables() -> None:
            engine = create_async_engine(parse_url(base).url)
            try:
                async with engine.begin() as conn:
                    rows = await conn.execute(
                        text(
                            "SELECT table_name FROM information_schema.tables "
                            "WHERE table_schema = DATABASE() AND table_name LIKE :p"
                        ),
                        {"p": f"{uid}\\_%"},
                    )
                    for (name,) in rows.all():
                        await conn.execute(text(f"DROP TABLE IF EXISTS `{name}`"))
            finally:
                await engine.dispose()

        asyncio.run(drop_tables())


@pytest.fixture(params=BACKENDS)
def durable_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """An isolated place on each shared backend in turn, cleaned up afterwards."""
    kind: str = request.param
    uid = f"tfd{uuid.uuid4().hex[:12]}"
    if kind == "sqlite":
        yield Backend(kind, f"sqlite:///{tmp_path / 'tasks.db'}", uid, tmp_path)
        return
    base = _service_url(kind)
    option = {"postgres": "schema", "mysql": "table_prefix", "redis": "prefix"}[kind]
    value = f"{uid}_" if kind == "mysql" else uid
    sep = "&" if "?" in base else "?"
    try:
        yield Backend(kind, f"{base}{sep}{option}={value}", uid, tmp_path)
    finally:
        _drop(kind, base, uid)


# -- instances ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Instance:
    """``durability_app:app`` (or another ``app``) served by uvicorn in a process of its
    own."""

    def __init__(
        self, backend: Backend, name: str, *, app: str = "durability_app:app", **env: str
    ) -> None:
        self.backend = backend
        self.name = name
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = backend.workdir / f"{name}.log"
        full_env = {
            **os.environ,
            "TASKFLOW_BACKEND": backend.url,
            "DURABILITY_RUN_LOG": str(backend.run_log),
            "DURABILITY_RELEASE": str(backend.release),
            "DURABILITY_INSTANCE": name,
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                app,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            cwd=HERE,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def client(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=timeout)

    def async_client(self, timeout: float = 30.0) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
        )

    def wait_ready(self, deadline: float = START_DEADLINE) -> None:
        end = time.monotonic() + deadline
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"instance {self.name} exited with {self.proc.returncode}:\n{self.output()}"
                )
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > end:
                raise AssertionError(f"instance {self.name} not ready in {deadline}s")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (a graceful shutdown); SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")


def start(
    backend: Backend, *names: str, app: str = "durability_app:app", **env: str
) -> list[Instance]:
    """Start instances (in parallel) of ``app`` and wait until every one answers."""
    started = [Instance(backend, name, app=app, **env) for name in names]
    try:
        for instance in started:
            instance.wait_ready()
    except BaseException:
        for instance in started:
            instance.kill()
            instance.stop()
        raise
    return started


def poll(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Return the predicate's first truthy result; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > end:
            pytest.fail(f"{what}: not within {timeout}s (last: {last!r})")
        time.sleep(interval)


def statuses(instance: Instance, ids: list[str]) -> dict[str, str | None]:
    """The statuses of ``ids`` as ``instance`` reads them through ``store.get``."""
    with instance.client() as client:
        response = client.post("/statuses", json={"ids": ids})
        response.raise_for_status()
        result: dict[str, str | None] = response.json()
        return result


def all_terminal(instance: Instance, ids: list[str]) -> dict[str, str | None] | None:
    """The statuses if every task is terminal, else None."""
    found = statuses(instance, ids)
    return found if all(s in TERMINAL for s in found.values()) else None


def warnings_in(instance: Instance, text: str) -> list[str]:
    return [line for line in instance.output().splitlines() if text in line]


def diagnose(fleet: list[Instance]) -> str:
    """The taskflow warnings and errors each instance logged (for failure messages)."""
    keys = (
        "INTERRUPTED",
        "adopting",
        "re-running",
        "Traceback",
        "Error",
        "failed",
    )
    parts = []
    for instance in fleet:
        lines = [line for line in instance.output().splitlines() if any(k in line for k in keys)]
        parts.append(f"--- {instance.name}: {len(lines)} lines\n" + "\n".join(lines[:15]))
    return "\n".join(parts)
