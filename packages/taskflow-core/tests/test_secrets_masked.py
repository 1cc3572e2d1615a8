"""No password in an error or log line, no store address in an HTTP answer (issue 8,
item 3). The SQL and Redis messages are checked in their packages' tests."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest
from fastapi import BackgroundTasks, FastAPI
from fastapi.testclient import TestClient

from fastapi_taskflow import TaskManager
from fastapi_taskflow.errors import BackendNotFoundError, BackendUnavailableError, BackendURLError
from fastapi_taskflow.models import CreateResult, TaskRecord
from fastapi_taskflow.redaction import mask_secrets
from taskflow_memory import MemoryBackend

SECRET = "s3cret"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("postgresql://app:s3cret@db/app", "postgresql://app:***@db/app"),
        ("redis://:s3cret@cache:6379/0?prefix=x", "redis://:***@cache:6379/0?prefix=x"),
        ("mysql://root:s3cret@h:3306/db?charset=utf8", "mysql://root:***@h:3306/db?charset=utf8"),
        ("URL 'postgres://a:s3cret@h/d' refused", "URL 'postgres://a:***@h/d' refused"),
        ("redis://h:6379/0?password=s3cret&db=1", "redis://h:6379/0?password=***&db=1"),
        ("postgresql://app@db/app", "postgresql://app@db/app"),
        ("sqlite:///var/tasks.db", "sqlite:///var/tasks.db"),
        ("no url here: user:s3cret", "no url here: user:s3cret"),
    ],
)
def test_mask_secrets_masks_passwords_and_keeps_the_rest(text: str, masked: str) -> None:
    assert mask_secrets(text) == masked


def test_a_missing_backend_package_does_not_print_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import fastapi_taskflow.backends as backends

    monkeypatch.setattr(backends, "entry_points", lambda group: [])  # nothing installed
    with pytest.raises(BackendNotFoundError) as info:
        TaskManager(backend=f"postgresql://app:{SECRET}@db/app")
    assert SECRET not in str(info.value)
    assert "postgresql://app:***@db/app" in str(info.value)


@pytest.mark.parametrize("url", [f"://app:{SECRET}@db/app", f"memory://app:{SECRET}@db/x"])
def test_malformed_urls_do_not_print_the_password(url: str) -> None:
    with pytest.raises(BackendURLError) as info:
        TaskManager(backend=url)
    assert SECRET not in str(info.value) and "***" in str(info.value)


class DownBackend(MemoryBackend):
    """A memory backend whose writes fail as an unreachable server's do, with the
    server's address (and a password, as some drivers echo the DSN) in the message."""

    create_now = None  # type: ignore[assignment]  # through the write buffer, like a server

    down = True

    async def create_many(self, records: Sequence[TaskRecord]) -> list[CreateResult]:
        if self.down:
            raise BackendUnavailableError(
                f"cannot reach postgresql://app:{SECRET}@10.1.2.3:5432/app (connection refused)"
            )
        return await super().create_many(records)


def test_the_503_names_neither_the_store_nor_its_address_and_the_log_masks_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    task_manager = TaskManager(backend=DownBackend())
    app = FastAPI()
    task_manager.install(app)

    @app.post("/add")
    def add(background_tasks: BackgroundTasks) -> dict[str, str]:
        return {"task_id": background_tasks.add_task(print, "never")}

    caplog.set_level(logging.WARNING, logger="fastapi_taskflow")
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/add")
    assert response.status_code == 503
    body = response.text
    assert "task store is unavailable" in response.json()["detail"]
    for leak in ("10.1.2.3", "5432", SECRET, "postgresql", "connection refused"):
        assert leak not in body
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "10.1.2.3" in logged  # the operator still learns where
    assert SECRET not in logged and "app:***@10.1.2.3" in logged


def test_the_refusal_while_down_does_not_carry_the_store_error_text() -> None:
    task_manager = TaskManager(backend=DownBackend())
    engine = task_manager._engine
    engine.availability.failed(BackendUnavailableError(f"postgresql://app:{SECRET}@10.1.2.3/x"))
    engine.availability._probe_at = float("inf")  # no probe lets this call through
    with pytest.raises(BackendUnavailableError) as info:
        task_manager.add_task(print, "x")
    assert "10.1.2.3" not in str(info.value) and SECRET not in str(info.value)
    assert info.value.__cause__ is not None  # the cause is kept for the operator
