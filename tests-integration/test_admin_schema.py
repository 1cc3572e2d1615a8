"""schemathesis against the admin OpenAPI schema: no server error, no response off-schema.

The app is a real TaskAdmin on a SQLite file holding tasks in every status (with logs,
tags and markup in their data); schemathesis generates requests for every operation
through its ASGI integration and validates each response against the schema (status
code declared, content type, body shape). The event stream never ends, so it is the one
operation left out here (tests-integration/test_admin_stream.py covers it).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI

from fastapi_taskflow import LogEntry, TaskManager, TaskRecord, TaskStatus
from fastapi_taskflow.admin import TaskAdmin
from fastapi_taskflow.clock import SystemClock

XSS = "<img src=x onerror=alert(1)>"
_DIR = Path(tempfile.mkdtemp(prefix="taskflow-schemathesis-"))


async def _seed(tm: TaskManager) -> None:
    backend = await tm.opened_backend()
    now = SystemClock().now()
    for i, status in enumerate(TaskStatus):
        started = now - timedelta(seconds=30 + i)
        record = TaskRecord(
            task_id=f"seed-{i}",
            func_name="jobs.seeded" if i % 2 else "jobs.other",
            status=status,
            queue="default" if i % 3 else "emails",
            priority=i,
            args=[XSS, i],
            kwargs={"note": XSS},
            tags={"tenant": "acme", "label": XSS},
            attempt=1,
            max_retries=2,
            created_at=now - timedelta(minutes=i),
            updated_at=now,
            started_at=started if status is not TaskStatus.PENDING else None,
            finished_at=now if status.is_terminal else None,
            error=f"RuntimeError: {XSS}" if status is TaskStatus.FAILED else None,
            result={"ok": XSS} if status is TaskStatus.SUCCESS else None,
        )
        await backend.create(record)
        await backend.append_logs(
            record.task_id,
            [
                LogEntry(timestamp=now, level="info", message=XSS, attempt=1),
                LogEntry(
                    timestamp=now,
                    level="error",
                    message=f"attempt 1 failed: RuntimeError: {XSS}",
                    attempt=1,
                    extra={"traceback": "Traceback ..."},
                ),
            ],
        )


def _build() -> FastAPI:
    tm = TaskManager(backend=f"sqlite:///{_DIR / 'tasks.db'}")

    @tm.task(name="jobs.seeded")
    async def seeded(text: str, n: int, *, note: str = "") -> None:
        return None

    app = FastAPI(title="taskflow admin", lifespan=tm.lifespan)
    TaskAdmin(app, tm, display_args=True)

    async def seed_once() -> None:
        await _seed(tm)
        await tm.shutdown()

    asyncio.run(seed_once())
    return app


app = _build()
schema = schemathesis.openapi.from_asgi("/openapi.json", app).exclude(path="/tasks/api/events")


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> object:
    yield None
    shutil.rmtree(_DIR, ignore_errors=True)


@schema.parametrize()
@hypothesis.settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_admin_api_matches_its_schema(case: schemathesis.Case) -> None:
    """Every generated request gets a declared status and a body its schema allows.

    All of schemathesis's checks run (no server error, declared status codes, content
    types, response bodies, headers) except ``positive_data_acceptance``: a pagination
    cursor is opaque, so a made-up one is a documented 400, not a schema violation.
    """
    case.call_and_validate(excluded_checks=[schemathesis.checks.positive_data_acceptance])
