"""No error, log line or HTTP answer of taskflow names the store's server (the team's
rule: no password, token or internal address), with real drivers failing for real: a
closed port on this machine and a host name that cannot resolve (``.invalid``). Every
operation refuses with ``BackendUnavailableError`` while the store has not answered.

Every record of taskflow's loggers is formatted as an app would (with tracebacks, at
DEBUG); the driver's own exceptions, which quote the address, reach them only as
masked text. The outage tests (``test_outages.py``) check the same of a real server
stopped under load.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import httpx
import pytest
from fastapi import BackgroundTasks, FastAPI
from store_servers import free_port

from fastapi_taskflow import BackendUnavailableError, TaskManager

pytestmark = pytest.mark.anyio

OURS = ("fastapi_taskflow", "taskflow_sql", "taskflow_redis")


CASES = [
    (scheme, where)
    for scheme in ("postgresql", "mysql", "redis")
    for where in ("closed-port", "unresolvable-name")
]


def _url(scheme: str, where: str) -> tuple[str, str]:
    """A URL nothing answers at, and the address a leak would show."""
    port = free_port()  # nothing listens there: connection refused
    host, address = (
        ("127.0.0.1", "127.0.0.1")
        if where == "closed-port"
        else (
            "tasks-db.invalid",
            "tasks-db",
        )
    )
    user, database = ("", "0") if scheme == "redis" else ("app", "test")
    return f"{scheme}://{user}:pw@{host}:{port}/{database}", address


class Formatted(logging.Handler):
    """Every record of taskflow's loggers, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(OURS):
            self.lines.append(self.format(record))


@pytest.fixture
def formatted_logs() -> Iterator[Formatted]:
    handler = Formatted()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.mark.parametrize(("scheme", "where"), CASES)
async def test_an_unreachable_store_is_refused_cleanly_and_never_named(
    scheme: str, where: str, formatted_logs: Formatted
) -> None:
    url, address = _url(scheme, where)
    task_manager = TaskManager(backend=url)
    app = FastAPI()
    task_manager.install(app)

    @app.post("/add")
    def add(background_tasks: BackgroundTasks) -> dict[str, str]:
        return {"task_id": background_tasks.add_task(print, "never")}

    async def job() -> None:
        pass

    some_id = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
    errors: list[BaseException] = []
    async with task_manager:
        with pytest.raises(BackendUnavailableError) as refused:
            task_manager.add_task(print, "never")
        errors.append(refused.value)
        for operation in (
            lambda: task_manager.cancel(some_id),
            lambda: asyncio.to_thread(task_manager.cancel_sync, some_id),
            lambda: task_manager.schedule_once(job, delay=60),
            lambda: task_manager.cancel_scheduled("nightly"),
            task_manager.list_scheduled,
            task_manager.purge,
        ):
            # not "the backend is not open": the store is unavailable, retry later
            with pytest.raises(BackendUnavailableError) as raised:
                await operation()
            errors.append(raised.value)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            answer = await client.post("/add")
    assert answer.status_code == 503
    assert address not in answer.text and "pw" not in answer.text

    logged = "\n".join(formatted_logs.lines)
    assert "unreachable at startup" in logged, logged  # the outage is logged ...
    assert "unavailable while connecting" in logged or "unreachable while" in logged, logged
    if address == "127.0.0.1":  # ... with the driver's reason, which quotes the address
        assert "<host>" in logged, logged
    for text in (logged, *(str(e) for e in errors)):
        assert address not in text, text
        assert ":pw@" not in text, text
