"""The ``taskflow`` command against real stores: SQLite (a temp file), Redis (a key
prefix of its own) and PostgreSQL (a schema of its own), through typer's CliRunner and as
the installed executable.

The store is filled by ``examples/cli_tasks.py`` (the example docs/cli.md uses): three
sent e-mails, a FAILED card charge, and an inventory sync PENDING for its retry in an hour.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import require_reachable
from typer.testing import CliRunner

from fastapi_taskflow import TaskRecord, TaskStatus
from fastapi_taskflow.backends import open_backend
from fastapi_taskflow.cli import ExitCode, app

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("TASKFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "TASKFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

sys.path.insert(0, str(ROOT / "examples"))
import cli_tasks  # noqa: E402  (examples/cli_tasks.py: the store docs/cli.md works on)

runner = CliRunner(env={"COLUMNS": ""})  # wide, unfolded tables whatever the terminal


def _drop_redis_prefix(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _drop_postgres_schema(url: str, schema: str) -> None:
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(url.replace("postgresql://", "postgres://"))
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty store of each kind, isolated to this test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tasks.db'}"
        return
    if request.param == "postgres":
        require_reachable(POSTGRES_URL)
        schema = f"cli_{uuid.uuid4().hex[:10]}"
        yield f"{POSTGRES_URL}?schema={schema}"
        _drop_postgres_schema(POSTGRES_URL, schema)
        return
    require_reachable(REDIS_URL)
    prefix = f"cli{uuid.uuid4().hex[:10]}"
    yield f"{REDIS_URL}?prefix={prefix}"
    _drop_redis_prefix(REDIS_URL, prefix)


@pytest.fixture
def filled(store_url: str) -> tuple[str, dict[str, str]]:
    """The store filled by the docs' example, and ``{name: task_id}``."""
    return store_url, asyncio.run(cli_tasks.fill(store_url))


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    result = runner.invoke(app, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def as_json(result: Any) -> Any:
    return json.loads(result.stdout)


async def _store(url: str, action: Any) -> Any:
    backend = open_backend(url)
    await backend.open()
    try:
        return await action(backend)
    finally:
        await backend.close()


def store(url: str, action: Any) -> Any:
    """Run ``await action(backend)`` on a backend of its own."""
    return asyncio.run(_store(url, action))


# -- list -----------------------------------------------------------------------------


def test_list_filters_and_pages(filled: tuple[str, dict[str, str]]) -> None:
    url, ids = filled

    every = as_json(invoke("list", "--backend", url, "--json"))
    assert {t["task_id"] for t in every["items"]} == set(ids.values())
    assert every["next_cursor"] is None
    # a filter no stored text can match (a byte that is not UTF-8 in argv arrives as a
    # lone surrogate): an empty list, not an error of the driver
    for option in ("--func", "--queue"):
        empty = as_json(invoke("list", "--backend", url, "--json", option, "\udcffx"))
        assert empty == {"items": [], "next_cursor": None}, option
    charge = next(t for t in every["items"] if t["task_id"] == ids["charge"])
    assert charge["status"] == "failed" and charge["func_name"] == "charge_card"
    assert charge["error"] == "RuntimeError: card declined for order 1042"
    assert charge["tags"] == {"order": "1042"} and charge["duration_seconds"] >= 0
    assert set(charge) == {
        "task_id",
        "func_name",
        "status",
        "queue",
        "priority",
        "tags",
        "attempt",
        "max_retries",
        "created_at",
        "updated_at",
        "started_at",
        "finished_at",
        "duration_seconds",
        "error",
        "progress",
        "idempotency_key",
        "owner",
    }

    def ids_of(*args: str) -> set[str]:
        result = invoke("list", "-b", url, "--json", *args)
        assert result.exit_code == 0, result.output
        return {t["task_id"] for t in as_json(result)["items"]}

    emails = {ids["email0"], ids["email1"], ids["email2"]}
    assert ids_of("--status", "failed") == {ids["charge"]}
    assert ids_of("--status", "failed,pending") == {ids["charge"], ids["sync"]}
    assert ids_of("-s", "FAILED", "-s", "success") == {ids["charge"]} | emails
    assert ids_of("--func", "send_email") == emails
    assert ids_of("--queue", "default") == set(ids.values())
    assert ids_of("--queue", "reports") == set()
    assert ids_of("--tag", "customer=ada") == {ids["email0"]}
    assert ids_of("--tag", "order:1042") == {ids["charge"]}
    assert ids_of("--search", "DECLINED") == {ids["charge"]}
    assert ids_of("--since", "1h") == set(ids.values())
    assert ids_of("--until", "1h") == set()
    assert ids_of("--since", "2000-01-01", "--until", "2100-01-01T00:00:00Z") == set(ids.values())

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(5):
        args = ["list", "-b", url, "--json", "--limit", "2"]
        page = as_json(invoke(*args, *(["--cursor", cursor] if cursor else [])))
        seen += [t["task_id"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids.values()) and len(seen) == 5

    human = invoke("list", "-b", url)
    assert human.exit_code == 0
    assert ids["charge"] in human.stdout and "FAILED" in human.stdout
    assert "card declined" in human.stdout and "customer=ada" in human.stdout
    paged = invoke("list", "-b", url, "--limit", "2")
    assert "more: --cursor " in paged.stderr

    bad_cursor = invoke("list", "-b", url, "--cursor", "not-a-cursor")
    assert bad_cursor.exit_code == ExitCode.USAGE and "--cursor" in bad_cursor.stderr


# -- show, logs -----------------------------------------------------------------------


def test_show_and_logs(filled: tuple[str, dict[str, str]]) -> None:
    url, ids = filled

    detail = as_json(invoke("show", ids["charge"], "-b", url, "--json"))
    assert detail["args"] == [1042] and detail["kwargs"] == {"amount_cents": 1999}
    assert detail["status"] == "failed" and detail["result"] is None
    failure = detail["logs"][0]
    assert failure["message"].startswith("attempt 1 failed: RuntimeError: card declined")
    assert failure["level"] == "error" and failure["attempt"] == 1
    assert "Traceback (most recent call last)" in failure["extra"]["traceback"]

    sent = as_json(invoke("show", ids["email0"], "-b", url, "--json"))
    assert sent["result"] == "sent 'Your receipt' to ada@example.com"

    human = invoke("show", ids["charge"], "-b", url)
    assert human.exit_code == 0
    assert "charge_card" in human.stdout and "1042" in human.stdout
    assert "amount_cents" in human.stdout and "card declined" in human.stdout

    lines = as_json(invoke("logs", ids["email0"], "-b", url, "--json"))
    assert [line["message"] for line in lines] == [
        "rendering 'Your receipt'",
        "sent to ada@example.com",
    ]
    assert set(lines[0]) == {"timestamp", "level", "message", "attempt", "extra"}
    last = as_json(invoke("logs", ids["email0"], "-b", url, "--json", "--tail", "1"))
    assert [line["message"] for line in last] == ["sent to ada@example.com"]
    with_trace = invoke("logs", ids["charge"], "-b", url)
    assert "Traceback" in with_trace.stdout
    without = invoke("logs", ids["charge"], "-b", url, "--no-tracebacks")
    assert "attempt 1 failed" in without.stdout and "Traceback" not in without.stdout

    for command in ("show", "logs"):
        missing = invoke(command, "no-such-task", "-b", url, "--json")
        assert missing.exit_code == ExitCode.NOT_FOUND == 3
        error = as_json(missing)["error"]
        assert error["kind"] == "not_found" and error["code"] == 3
        assert "no task has the id 'no-such-task'" in error["message"]
        assert "no task has the id" in invoke(command, "no-such-task", "-b", url).stderr
    # an id no store can hold (a NUL; a byte that is not UTF-8 in argv arrives as a lone
    # surrogate): not found, as any other, not an error of the driver
    for command in ("show", "logs", "cancel", "retry"):
        for bad in ("a\x00b", "\udcffab"):
            missing = invoke(command, bad, "-b", url, "--json")
            assert missing.exit_code == ExitCode.NOT_FOUND, (command, bad, missing.stdout)
            assert as_json(missing)["error"]["kind"] == "not_found"


# -- retry, cancel --------------------------------------------------------------------


def test_retry_and_cancel(filled: tuple[str, dict[str, str]]) -> None:
    url, ids = filled

    cancelled = invoke("cancel", ids["sync"], "-b", url, "--json")
    assert cancelled.exit_code == 0, cancelled.output
    assert as_json(cancelled)["status"] == "cancelled"
    assert store(url, lambda b: b.queue_length("default")) == 0  # off its queue

    again = invoke("cancel", ids["sync"], "-b", url, "--json")  # already: unchanged
    assert again.exit_code == 0 and as_json(again) == as_json(cancelled)
    ended = invoke("cancel", ids["email1"], "-b", url, "--json")
    assert ended.exit_code == ExitCode.BAD_STATE == 4
    assert as_json(ended)["error"]["kind"] == "bad_state"
    assert "only PENDING or RUNNING tasks can be cancelled" in as_json(ended)["error"]["message"]

    retried = as_json(invoke("retry", ids["charge"], "-b", url, "--json"))
    assert retried["task_id"] == ids["charge"]
    assert (retried["status"], retried["attempt"], retried["error"]) == ("pending", 0, None)
    assert retried["tags"] == {"order": "1042"}
    assert (retried["started_at"], retried["finished_at"]) == (None, None)
    # Owned by the operator until a worker claims it: if the enqueue had been lost, the
    # instances would take that owner (no heartbeat) for dead and queue the task again.
    assert retried["owner"].startswith("taskflow-cli@")
    record: TaskRecord = store(url, lambda b: b.get(ids["charge"]))
    assert (record.args, record.kwargs) == ([1042], {"amount_cents": 1999})
    assert store(url, lambda b: b.queue_length("default")) == 1  # on its queue for a worker
    assert record.logs[-1].message.startswith("retried by taskflow-cli@")

    not_finished = invoke("retry", ids["charge"], "-b", url)
    assert not_finished.exit_code == ExitCode.BAD_STATE
    assert "PENDING; only FAILED, INTERRUPTED or CANCELLED" in not_finished.stderr
    succeeded = invoke("retry", ids["email1"], "-b", url)
    assert succeeded.exit_code == ExitCode.BAD_STATE
    assert invoke("retry", "nope", "-b", url).exit_code == ExitCode.NOT_FOUND
    assert invoke("cancel", "nope", "-b", url).exit_code == ExitCode.NOT_FOUND

    # Bulk: the cancelled sync is the only CANCELLED task; nothing is FAILED any more.
    assert as_json(invoke("retry", "--all-failed", "-b", url, "--json")) == {"task_ids": []}
    bulk = invoke("retry", "--all-failed", "--status", "cancelled", "-b", url, "--json")
    assert as_json(bulk) == {"task_ids": [ids["sync"]]}
    human = invoke("retry", "--all-failed", "--status", "cancelled", "-b", url)
    assert human.exit_code == 0 and "retried 0 tasks" in human.stderr

    both = invoke("retry", ids["charge"], "--all-failed", "-b", url)
    assert both.exit_code == ExitCode.USAGE
    neither = invoke("retry", "-b", url)
    assert neither.exit_code == ExitCode.USAGE and "--all-failed" in neither.stderr
    wrong = invoke("retry", "--all-failed", "--status", "success", "-b", url, "--json")
    assert wrong.exit_code == ExitCode.BAD_STATE


def test_retry_all_failed_filters_and_stops_at_a_full_queue(store_url: str) -> None:
    now = datetime.now(timezone.utc)
    failed = [
        _record(f"f{i}", "report", TaskStatus.FAILED, now - timedelta(minutes=10 - i))
        for i in range(4)
    ]
    other = _record("x", "other", TaskStatus.FAILED, now)
    store(store_url, lambda b: b.create_many([*failed, other]))

    full = invoke(
        "retry", "--all-failed", "--func", "report", "--max-queued", "2", "-b", store_url, "--json"
    )
    assert full.exit_code == ExitCode.BAD_STATE
    body = as_json(full)
    assert body["task_ids"] == ["f3", "f2"]  # newest first, until the queue held 2
    assert body["error"]["kind"] == "bad_state" and "is full" in body["error"]["message"]

    rest = invoke("retry", "--all-failed", "--func", "report", "-n", "1", "-b", store_url, "--json")
    assert as_json(rest) == {"task_ids": ["f1"]}
    statuses = {
        r.task_id: r.status for r in store(store_url, lambda b: b.query(_query_all())).items
    }
    assert statuses == {
        "f0": TaskStatus.FAILED,
        "f1": TaskStatus.PENDING,
        "f2": TaskStatus.PENDING,
        "f3": TaskStatus.PENDING,
        "x": TaskStatus.FAILED,
    }


def _query_all() -> Any:
    from fastapi_taskflow import TaskQuery

    return TaskQuery(limit=1000)


def _record(task_id: str, func: str, status: TaskStatus, at: datetime) -> TaskRecord:
    done = status.is_terminal
    return TaskRecord(
        task_id=task_id,
        func_name=func,
        status=status,
        args=[],
        kwargs={},
        attempt=1,
        created_at=at,
        updated_at=at,
        started_at=at if done else None,
        finished_at=at if done else None,
        error="boom" if status is TaskStatus.FAILED else None,
    )


# -- purge ----------------------------------------------------------------------------


def test_purge_older_than(store_url: str) -> None:
    now = datetime.now(timezone.utc)
    old = [_record(f"old{i}", "job", TaskStatus.SUCCESS, now - timedelta(days=9)) for i in range(5)]
    recent = _record("recent", "job", TaskStatus.FAILED, now - timedelta(hours=1))
    waiting = _record("waiting", "job", TaskStatus.PENDING, now - timedelta(days=30))
    store(store_url, lambda b: b.create_many([*old, recent, waiting]))

    nothing = invoke("purge", "--older-than", "10d", "-b", store_url, "--json")
    assert as_json(nothing) == {"purged": 0}
    shown = invoke("purge", "--older-than", "7d", "--batch-size", "2", "-b", store_url)
    assert shown.exit_code == 0, shown.output
    assert "purged 5 finished tasks" in shown.stdout
    assert "5 deleted" in shown.stderr  # the progress bar's final state
    left = sorted(r.task_id for r in store(store_url, lambda b: b.query(_query_all())).items)
    assert left == ["recent", "waiting"]
    assert as_json(invoke("purge", "--older-than", "30m", "-b", store_url, "--json")) == {
        "purged": 1
    }

    for bad in ("7x", "-1d", "", "d7"):
        result = invoke("purge", "--older-than", bad, "-b", store_url)
        assert result.exit_code == ExitCode.USAGE, bad
        assert "--older-than" in result.stderr
    assert invoke("purge", "-b", store_url).exit_code == ExitCode.USAGE  # required


# -- stats ----------------------------------------------------------------------------


def test_stats(filled: tuple[str, dict[str, str]]) -> None:
    url, _ = filled

    data = as_json(invoke("stats", "-b", url, "--json", "--queue", "default", "--queue", "x"))
    assert set(data) == {"total", "by_status", "by_func", "durations", "throughput", "queues"}
    assert data["total"] == 5
    assert data["by_status"] == {"success": 3, "failed": 1, "pending": 1}
    assert data["by_func"]["send_email"] == {"success": 3}
    assert data["durations"]["send_email"]["count"] == 3
    assert set(data["durations"]["send_email"]) == {"count", "p50", "p95", "p99"}
    assert "sync_inventory" not in data["durations"]  # never finished
    assert sum(b["succeeded"] for b in data["throughput"]) == 3
    assert sum(b["failed"] for b in data["throughput"]) == 1
    assert data["queues"] == {"default": 1, "x": 0}  # the sync waits for its retry

    human = invoke("stats", "-b", url)
    assert human.exit_code == 0
    assert "5 tasks" in human.stdout and "send_email" in human.stdout
    assert "p95" in human.stdout and "default" in human.stdout
    assert invoke("stats", "-b", url, "--bucket", "0s").exit_code == ExitCode.USAGE


# -- watch ----------------------------------------------------------------------------


def test_watch_once(filled: tuple[str, dict[str, str]]) -> None:
    url, ids = filled

    snapshot = as_json(invoke("watch", "--once", "-b", url, "--json"))
    assert snapshot["type"] == "snapshot" and snapshot["total"] == 5
    assert snapshot["by_status"]["success"] == 3
    assert {t["task_id"] for t in snapshot["recent"]} == set(ids.values())

    human = invoke("watch", "--once", "-b", url)
    assert human.exit_code == 0
    assert "5 tasks" in human.stdout and ids["charge"] in human.stdout

    brief = invoke("watch", "--duration", "0.3", "-b", url)
    assert brief.exit_code == 0 and "events (0 received)" in brief.stdout


def taskflow_executable() -> str:
    """The installed console script (next to this interpreter, else on PATH)."""
    beside = Path(sys.executable).with_name("taskflow")
    found = str(beside) if beside.exists() else shutil.which("taskflow")
    assert found, "the taskflow console script is not installed"
    return found


def test_watch_streams_events_of_a_running_app(store_url: str, tmp_path: Path) -> None:
    """The installed ``taskflow watch --json`` sees every event an app publishes."""
    store(store_url, lambda b: b.stats())  # the store exists (an app has opened it)
    asyncio.run(_watch_live(store_url))


async def _watch_live(url: str) -> None:
    watcher = await asyncio.create_subprocess_exec(
        taskflow_executable(),
        "watch",
        "--json",
        "--duration",
        "60",
        "--backend",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert watcher.stdout is not None
    try:
        first = json.loads(await asyncio.wait_for(watcher.stdout.readline(), 30))
        assert first["type"] == "snapshot"  # printed once subscribed: nothing is missed
        task_manager, tasks = cli_tasks.build(url)
        async with task_manager:
            task_id = task_manager.add_task(tasks["send_email"], "linus@example.com", "Hi")
            seen: list[dict[str, Any]] = []
            wanted = {("lifecycle", "running"), ("log", "sent to linus@example.com")}
            wanted.add(("lifecycle", "success"))
            # Log events travel apart from lifecycle ones: their order may differ.
            while not wanted <= {(e["type"], e.get("status") or e.get("message")) for e in seen}:
                line = await asyncio.wait_for(watcher.stdout.readline(), 30)
                assert line, "watch ended early"
                event = json.loads(line)
                if event["task_id"] == task_id:
                    seen.append(event)
        lifecycle = [e["status"] for e in seen if e["type"] == "lifecycle"]
        assert lifecycle == ["running", "success"]
        assert all(e["func_name"] == "send_email" for e in seen)
    finally:
        if watcher.returncode is None:
            watcher.terminate()
        await watcher.wait()


# -- check ----------------------------------------------------------------------------


def test_check_passes_on_a_working_store(filled: tuple[str, dict[str, str]]) -> None:
    url, _ = filled

    result = invoke("check", "-b", url, "--json")
    assert result.exit_code == 0, result.output
    report = as_json(result)
    assert report["ok"] is True
    names = [c["name"] for c in report["checks"]]
    if url.startswith(("sqlite", "postgresql")):
        assert names == ["backend package", "connect", "schema", "read"]
        assert "version 3 (current)" in report["checks"][2]["detail"]
    else:
        assert names == ["backend package", "ping", "read"]
        assert "server answers" in report["checks"][1]["detail"]
    assert report["checks"][-1]["detail"] == "5 tasks stored"
    assert all(c["ok"] for c in report["checks"])
    human = invoke("check", "-b", url)
    assert human.exit_code == 0 and "5 tasks stored" in human.stdout


def test_check_fails_clearly(tmp_path: Path) -> None:
    missing = invoke("check", "-b", f"sqlite:///{tmp_path / 'nope.db'}", "--json")
    assert missing.exit_code == ExitCode.UNAVAILABLE == 5
    assert as_json(missing)["ok"] is False
    assert "no SQLite database file" in as_json(missing)["checks"][-1]["detail"]
    assert not (tmp_path / "nope.db").exists()  # a typo never creates a store

    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    no_tables = invoke("check", "-b", f"sqlite:///{empty}")
    assert no_tables.exit_code == ExitCode.UNAVAILABLE
    assert "no taskflow tables" in no_tables.stderr
    listed = invoke("list", "-b", f"sqlite:///{empty}")  # every command checks first
    assert listed.exit_code == ExitCode.UNAVAILABLE and "no taskflow tables" in listed.stderr

    newer = tmp_path / "newer.db"
    asyncio.run(cli_tasks.fill(f"sqlite:///{newer}"))
    with sqlite3.connect(newer) as conn:
        conn.execute(
            "INSERT INTO taskflow_schema_version (version, description, applied_at) "
            "VALUES (99, 'from the future', '2100-01-01')"
        )
    future = invoke("check", "-b", f"sqlite:///{newer}", "--json")
    assert future.exit_code == ExitCode.UNAVAILABLE
    assert "version 99, newer than" in as_json(future)["checks"][-1]["detail"]


def test_a_postgres_schema_without_tables_is_refused_and_left_alone() -> None:
    require_reachable(POSTGRES_URL)
    schema = f"cli_absent_{uuid.uuid4().hex[:8]}"
    url = f"{POSTGRES_URL}?schema={schema}"

    for args in (("check",), ("list",), ("purge", "--older-than", "1d")):
        result = invoke(*args, "-b", url)
        assert result.exit_code == ExitCode.UNAVAILABLE, (args, result.output)
        assert "no taskflow tables in this postgresql database" in result.stderr
        assert f"PostgreSQL schema {schema!r}" in result.stderr

    async def exists() -> bool:
        import asyncpg

        conn = await asyncpg.connect(POSTGRES_URL.replace("postgresql://", "postgres://"))
        try:
            found = await conn.fetchval(
                "SELECT 1 FROM information_schema.schemata WHERE schema_name = $1", schema
            )
        finally:
            await conn.close()
        return found is not None

    assert not asyncio.run(exists())  # nothing was created


def test_no_password_and_no_address_is_ever_printed_in_an_error() -> None:
    secret = "s3cr3t-Pa55"
    # SQLAlchemy connects with '/', '?' or '#' unencoded in a password (a generated
    # base64 password has '/'): none of its pieces is printed either
    odd = "Xq7/Zk9?Wm3#Rt5"
    for url, address in (
        (f"redis://:{secret}@127.0.0.1:1/0", "127.0.0.1"),
        (f"postgresql://bob:{secret}@127.0.0.1:1/db", "127.0.0.1"),
        (f"mysql://bob:{secret}@127.0.0.1:1/db", "127.0.0.1"),
        (f"mysql://bob:{secret}@taskflow-db.invalid:3306/db", "taskflow-db"),
        (f"redis://:{secret}@taskflow-cache.invalid:6379/0", "taskflow-cache"),
        (f"postgresql://bob:{odd}@127.0.0.1:1/db", "127.0.0.1"),
        (f"mysql://bob:{odd}@taskflow-db.invalid:3306/db", "taskflow-db"),
    ):
        password = odd if odd in url else secret
        pieces = ("Xq7", "Zk9", "Wm3", "Rt5") if password == odd else (secret,)
        for args in (("check",), ("list",), ("check", "--json"), ("show", "x", "--json")):
            result = invoke(*args, "-b", url)
            assert result.exit_code == ExitCode.UNAVAILABLE, (url, args, result.output)
            shown = result.output + result.stderr
            assert not any(piece in shown for piece in pieces), (url, args, shown)
            assert address not in result.stderr, (url, args, result.stderr)
        report = as_json(invoke("check", "--json", "-b", url))
        failed = [check["detail"] for check in report["checks"] if not check["ok"]]
        assert failed and not any(address in detail for detail in failed), failed
        # where the store is named as output (not an error), only the password is hidden
        assert report["backend"]["url"] == url.replace(password, "***")


def test_bad_usage_exits_2(tmp_path: Path) -> None:
    no_backend = invoke("list", env={"TASKFLOW_BACKEND": ""})
    assert no_backend.exit_code == ExitCode.USAGE == 2
    assert "pass --backend URL or set TASKFLOW_BACKEND" in no_backend.stderr

    memory = invoke("list", "-b", "memory://", "--json")
    assert memory.exit_code == ExitCode.USAGE
    assert "cannot see its tasks" in as_json(memory)["error"]["message"]

    unknown = invoke("check", "-b", "nosuch://host/x")
    assert unknown.exit_code == ExitCode.USAGE
    assert "no backend is installed for nosuch://" in unknown.stderr

    url = f"sqlite:///{tmp_path / 'x.db'}"
    for args, fragment in [
        (("list", "--status", "done"), "unknown status 'done'"),
        (("list", "--tag", "novalue"), "expected KEY=VALUE"),
        (("list", "--since", "yesterday"), "neither a duration"),
        (("list", "--limit", "0"), ""),
        (("list", "--search", "x" * 300), "--search: String should have at most 200"),
        (("nosuchcommand",), ""),
    ]:
        result = invoke(*args, "-b", url)
        assert result.exit_code == ExitCode.USAGE, (args, result.output)
        assert fragment in result.output + result.stderr


def test_the_backend_comes_from_the_environment(filled: tuple[str, dict[str, str]]) -> None:
    url, ids = filled
    result = invoke("list", "--json", env={"TASKFLOW_BACKEND": url})
    assert {t["task_id"] for t in as_json(result)["items"]} == set(ids.values())


# -- the installed executable ---------------------------------------------------------


def test_the_installed_taskflow_command(filled: tuple[str, dict[str, str]]) -> None:
    url, ids = filled
    env = {**os.environ, "TASKFLOW_BACKEND": url}

    listed = subprocess.run(
        [taskflow_executable(), "list", "--status", "failed", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert [t["task_id"] for t in json.loads(listed.stdout)["items"]] == [ids["charge"]]

    missing = subprocess.run(
        [taskflow_executable(), "show", "nope"], capture_output=True, text=True, env=env, timeout=60
    )
    assert missing.returncode == 3 and "no task has the id 'nope'" in missing.stderr

    module = subprocess.run(
        [sys.executable, "-m", "fastapi_taskflow.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert module.returncode == 0 and "purge" in module.stdout


def test_a_task_retried_from_the_command_line_runs_in_the_app(
    filled: tuple[str, dict[str, str]],
) -> None:
    """``taskflow retry`` in another process; the app's engine runs the task again."""
    url, ids = filled
    asyncio.run(_retry_while_app_runs(url, ids["charge"]))


async def _retry_while_app_runs(url: str, task_id: str) -> None:
    task_manager, _ = cli_tasks.build(url)
    async with task_manager:
        retry = await asyncio.create_subprocess_exec(
            taskflow_executable(),
            "retry",
            task_id,
            "--json",
            "--backend",
            url,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(retry.communicate(), 60)
        assert retry.returncode == 0 and json.loads(out)["status"] == "pending"
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            record = await task_manager.store.aget(task_id)
            assert record is not None
            failures = [e for e in record.logs if e.message.startswith("attempt 1 failed")]
            if record.status is TaskStatus.FAILED and len(failures) == 2:
                break  # it ran again (and the card was declined again)
            assert asyncio.get_running_loop().time() < deadline, record
            await asyncio.sleep(0.05)


def test_a_running_task_cancelled_from_the_command_line_ends_cancelled(store_url: str) -> None:
    """``taskflow cancel`` in another process stops a task running in the app."""
    store(store_url, lambda b: b.stats())  # the store exists (an app has opened it)
    asyncio.run(_cancel_while_app_runs(store_url))


async def _cancel_while_app_runs(url: str) -> None:
    from fastapi_taskflow import TaskManager

    task_manager = TaskManager(backend=url, poll_interval=0.05)
    finished: list[bool] = []

    @task_manager.task(name="endless_job")
    async def endless_job() -> None:
        await asyncio.Event().wait()  # only a cancellation ends it
        finished.append(True)

    async with task_manager:
        task_id = task_manager.add_task(endless_job)
        deadline = asyncio.get_running_loop().time() + 30
        while (record := await task_manager.store.aget(task_id)) is None or (
            record.status is not TaskStatus.RUNNING
        ):
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
        cancel = await asyncio.create_subprocess_exec(
            taskflow_executable(),
            "cancel",
            task_id,
            "--json",
            "--backend",
            url,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(cancel.communicate(), 60)
        assert cancel.returncode == 0 and json.loads(out)["status"] == "running"
        deadline = asyncio.get_running_loop().time() + 30
        while (record := await task_manager.store.aget(task_id)) is None or (
            record.status is not TaskStatus.CANCELLED
        ):
            assert record is not None and record.status is TaskStatus.RUNNING, record
            assert asyncio.get_running_loop().time() < deadline, record
            await asyncio.sleep(0.05)
    assert record.cancel_requested and finished == []
    assert record.error is not None and "TaskCancelledError" in record.error


# -- logs --follow --------------------------------------------------------------------


def test_logs_follow_prints_lines_as_a_running_task_writes_them(store_url: str) -> None:
    store(store_url, lambda b: b.stats())  # the store exists (an app has opened it)
    asyncio.run(_follow_a_running_task(store_url))


async def _follow_a_running_task(url: str) -> None:
    from fastapi_taskflow import TaskManager, task_log

    task_manager = TaskManager(backend=url, poll_interval=0.05)
    go_on = asyncio.Event()

    @task_manager.task(name="long_job")
    async def long_job(n: int) -> None:
        task_log(f"step 1 of {n}")
        await go_on.wait()
        task_log(f"step 2 of {n}", level="warning")

    async with task_manager:
        task_id = task_manager.add_task(long_job, 2)
        deadline = asyncio.get_running_loop().time() + 30
        while (record := await task_manager.store.aget(task_id)) is None or (
            record.status is not TaskStatus.RUNNING
        ):
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
        follower = await asyncio.create_subprocess_exec(
            taskflow_executable(),
            "logs",
            task_id,
            "--follow",
            "--json",
            "--backend",
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert follower.stdout is not None and follower.stderr is not None
        try:
            ready = await asyncio.wait_for(follower.stderr.readline(), 30)
            assert f"following task {task_id} (running)" in ready.decode()  # subscribed
            go_on.set()
            lines: list[dict[str, Any]] = []
            while raw := await asyncio.wait_for(follower.stdout.readline(), 30):
                lines.append(json.loads(raw))
            await asyncio.wait_for(follower.wait(), 30)  # it ends once the task finished
        finally:
            if follower.returncode is None:
                follower.terminate()
                await follower.wait()
    assert follower.returncode == 0
    by_message = {line["message"]: line for line in lines}
    assert sorted(by_message) == ["step 1 of 2", "step 2 of 2"]  # each once
    assert len(lines) == 2
    assert by_message["step 2 of 2"]["level"] == "warning"
    assert by_message["step 2 of 2"]["attempt"] == 1
    assert set(lines[0]) == {"timestamp", "level", "message", "attempt", "extra"}
