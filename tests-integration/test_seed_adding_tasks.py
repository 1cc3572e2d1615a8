"""The "Adding Tasks" reference page: every example, run verbatim through a real app.

Each test imports a fresh copy of the example's seed app (``seed_apps/at_*.py``) on each
backend of ``TASKFLOW_SEED_BACKENDS`` and drives it with httpx over ASGI. httpx's ASGI
transport does not run the app's lifespan, so the tests enter the task manager themselves
(``async with task_manager``) as the app's lifespan would.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import ModuleType
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI

import fastapi_taskflow.executor
from fastapi_taskflow import MemoryObserver, TaskRecord, TaskStatus
from fastapi_taskflow.events import LifecycleEvent, LogEvent

pytestmark = pytest.mark.anyio

TEST_DEADLINE = 60.0
Loader = Callable[[str], ModuleType]
WaitFor = Callable[..., Awaitable[Any]]


@asynccontextmanager
async def serving(seed: ModuleType, app: Any = None) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the seed app, with its task manager started as its lifespan would."""
    transport = httpx.ASGITransport(app=app or seed.app)
    with anyio.fail_after(TEST_DEADLINE):  # a hang fails the test instead of the run
        async with (
            seed.task_manager,
            httpx.AsyncClient(transport=transport, base_url="http://seed") as client,
        ):
            yield client


def assert_task_id(value: Any) -> str:
    assert isinstance(value, str)
    assert str(uuid.UUID(value)) == value
    return value


async def finished(
    seed: ModuleType, task_id: str, wait_for: WaitFor, manager: Any = None
) -> TaskRecord:
    """Wait until the task reached a final status and return its record."""
    store = (manager or seed.task_manager).store

    async def done() -> TaskRecord | None:
        record = await store.aget(task_id)
        return record if record is not None and record.status.is_terminal else None

    record: TaskRecord = await wait_for(done)
    return record


# -- Basic usage -------------------------------------------------------------------------


async def test_basic_usage_returns_id_at_once_and_runs_after_response(
    load_seed_app: Loader, wait_for: WaitFor
) -> None:
    seed = load_seed_app("at_basic_usage")
    at_response: dict[str, Any] = {}

    async def probe(scope: Any, receive: Any, send: Any) -> None:
        """Looks at the task while the response goes out."""

        async def probing_send(message: Any) -> None:
            if message["type"] == "http.response.body":
                task_id = json.loads(message["body"])["task_id"]
                at_response["calls"] = list(seed.calls)
                at_response["record"] = await seed.task_manager.store.aget(task_id)
            await send(message)

        await seed.app(scope, receive, probing_send)

    async with serving(seed, probe) as client:
        response = await client.post("/signup", params={"email": "ada@example.com"})
        assert response.status_code == 200
        task_id = assert_task_id(response.json()["task_id"])
        assert list(response.json()) == ["task_id"]

        # When the response was sent the task existed, PENDING, and had not run.
        assert at_response["calls"] == []
        assert at_response["record"].task_id == task_id
        assert at_response["record"].status is TaskStatus.PENDING

        record = await finished(seed, task_id, wait_for)
        assert record.status is TaskStatus.SUCCESS
        assert record.func_name == f"{seed.__name__}.send_email"
        assert record.args == ["ada@example.com"]
        assert seed.calls == [("send_email", ("ada@example.com",), {"task_id": task_id})]


async def test_basic_usage_each_request_gets_its_own_task(
    load_seed_app: Loader, wait_for: WaitFor
) -> None:
    seed = load_seed_app("at_basic_usage")
    emails = [f"user{i}@example.com" for i in range(5)]
    async with serving(seed) as client:
        responses = await asyncio.gather(
            *(client.post("/signup", params={"email": e}) for e in emails)
        )
        ids = [assert_task_id(r.json()["task_id"]) for r in responses]
        assert len(set(ids)) == len(ids)
        for task_id in ids:
            assert (await finished(seed, task_id, wait_for)).status is TaskStatus.SUCCESS
    assert sorted(call[1][0] for call in seed.calls) == emails


# -- Positional and keyword arguments ----------------------------------------------------


async def test_positional_keyword_and_mixed_arguments(
    load_seed_app: Loader, wait_for: WaitFor
) -> None:
    seed = load_seed_app("at_arguments")
    async with serving(seed) as client:
        response = await client.post("/images/42")
        assert response.status_code == 200
        assert response.json() == {"queued": 3}

        async def three_done() -> list[TaskRecord] | None:
            page = await seed.task_manager.store.aquery()
            done = [r for r in page.items if r.status is TaskStatus.SUCCESS]
            return page.items if len(done) == 3 == len(page.items) else None

        records = await wait_for(three_done)

    assert sorted(seed.calls, key=repr) == sorted(
        [
            ("send_email", ("user@example.com",), {}),
            ("send_email", ("user@example.com",), {}),
            ("resize_image", (42,), {"width": 800, "height": 600}),
        ],
        key=repr,
    )
    stored = sorted(((r.func_name.rsplit(".", 1)[1], r.args, r.kwargs) for r in records), key=repr)
    assert stored == sorted(
        [
            ("send_email", ["user@example.com"], {}),
            ("send_email", [], {"address": "user@example.com"}),
            ("resize_image", [42], {"width": 800, "height": 600}),
        ],
        key=repr,
    )


# -- Storing the task ID -----------------------------------------------------------------


async def test_storing_the_task_id_and_querying_status(
    load_seed_app: Loader, wait_for: WaitFor
) -> None:
    seed = load_seed_app("at_storing_task_id")
    async with serving(seed) as client:
        response = await client.post("/report", params={"user_id": 7})
        assert response.status_code == 200
        task_id = assert_task_id(response.json()["task_id"])

        async def status_success() -> dict[str, Any] | None:
            got = await client.get(f"/report/{task_id}")
            assert got.status_code == 200, got.text
            body: dict[str, Any] = got.json()
            return body if body["status"] == "success" else None

        body = await wait_for(status_success)
        record = await seed.task_manager.store.aget(task_id)
        assert record is not None
        assert body == record.to_dict()
        assert body["task_id"] == task_id
        assert body["func_name"] == f"{seed.__name__}.generate_report"
        assert body["args"] == [7]
        assert body["result"] == {"user_id": 7, "rows": 3}
        assert body["attempt"] == 1
        assert body["started_at"] is not None and body["finished_at"] is not None

        assert (await client.get(f"/report/{uuid.uuid4()}")).status_code == 404
        assert (await client.get("/report/not-a-task-id")).status_code == 404
    assert seed.calls == [("generate_report", (7,), {})]


# -- Idempotency keys --------------------------------------------------------------------


async def test_idempotency_key_returns_the_existing_task(
    load_seed_app: Loader, wait_for: WaitFor
) -> None:
    seed = load_seed_app("at_idempotency")
    async with serving(seed) as client:
        first = (await client.post("/invoice/1/send")).json()["task_id"]
        assert_task_id(first)
        record = await finished(seed, first, wait_for)
        assert record.status is TaskStatus.SUCCESS
        assert record.idempotency_key == "invoice-1"

        second = (await client.post("/invoice/1/send")).json()["task_id"]
        assert second == first
        other = (await client.post("/invoice/2/send")).json()["task_id"]
        assert other != first
        await finished(seed, other, wait_for)
    assert seed.calls == [("email_invoice", (1,), {}), ("email_invoice", (2,), {})]


async def test_idempotency_key_under_concurrent_calls(
    load_seed_app: Loader, wait_for: WaitFor
) -> None:
    seed = load_seed_app("at_idempotency")
    async with serving(seed) as client:
        responses = await asyncio.gather(*(client.post("/invoice/5/send") for _ in range(8)))
        ids = {r.json()["task_id"] for r in responses}
        assert len(ids) == 1
        (task_id,) = ids
        assert (await finished(seed, task_id, wait_for)).status is TaskStatus.SUCCESS
    assert seed.calls == [("email_invoice", (5,), {})]


async def test_idempotency_key_is_released_by_a_failed_task(
    load_seed_app: Loader, wait_for: WaitFor
) -> None:
    seed = load_seed_app("at_idempotency")
    seed.FAILING_INVOICES.add(3)
    async with serving(seed) as client:
        failed_id = (await client.post("/invoice/3/send")).json()["task_id"]
        failed = await finished(seed, failed_id, wait_for)
        assert failed.status is TaskStatus.FAILED
        assert failed.attempt == 1  # retries=0: run once
        assert "mail server refused invoice 3" in (failed.error or "")

        seed.FAILING_INVOICES.discard(3)
        retried_id = (await client.post("/invoice/3/send")).json()["task_id"]
        assert assert_task_id(retried_id) != failed_id
        assert (await finished(seed, retried_id, wait_for)).status is TaskStatus.SUCCESS

        # The successful task holds the key again; the failed one stays in the history.
        assert (await client.post("/invoice/3/send")).json()["task_id"] == retried_id
        old = await seed.task_manager.store.aget(failed_id)
        assert old is not None and old.status is TaskStatus.FAILED
    assert seed.calls == [("email_invoice", (3,), {}), ("email_invoice", (3,), {})]


# -- Tags --------------------------------------------------------------------------------

TAGS = {"user_id": "42", "plan": "pro", "source": "api"}


async def test_tags_are_stored_and_reach_the_task_context_and_observers(
    load_seed_app: Loader, wait_for: WaitFor
) -> None:
    seed = load_seed_app("at_tags")
    observer = MemoryObserver()
    seed.task_manager.observers.add(observer)
    async with serving(seed) as client:
        response = await client.post("/invoice", params={"user_id": 42, "plan": "pro"})
        task_id = assert_task_id(response.json()["task_id"])
        record = await finished(seed, task_id, wait_for)
        assert record.status is TaskStatus.SUCCESS
        assert record.tags == TAGS
        assert record.max_retries == 2  # @task_manager.task(retries=2)

        # task_log() inside the task saw the plan through get_task_context().tags.
        lines = [e for e in record.logs if e.message == "Processing invoice"]
        assert len(lines) == 1
        assert lines[0].extra == {"user_id": 42, "plan": "pro"}
        assert lines[0].attempt == 1

        # Every event of the task carries the tags.
        def observed() -> list[Any] | None:
            events = observer.for_task(task_id)
            statuses = [e.status for e in events if isinstance(e, LifecycleEvent)]
            logs = [e for e in events if isinstance(e, LogEvent)]
            return events if TaskStatus.SUCCESS in statuses and logs else None

        events = await wait_for(observed)
    assert all(e.tags == TAGS for e in events), events
    lifecycle = [e.status for e in events if isinstance(e, LifecycleEvent)]
    assert lifecycle[0] is TaskStatus.RUNNING and lifecycle[-1] is TaskStatus.SUCCESS
    (log,) = [e for e in events if isinstance(e, LogEvent)]
    assert log.message == "Processing invoice"
    assert log.extra == {"user_id": 42, "plan": "pro"}
    assert log.func_name == f"{seed.__name__}.process_invoice"


async def test_tags_example_task_outside_a_task_uses_the_default_plan(
    load_seed_app: Loader,
) -> None:
    seed = load_seed_app("at_tags")
    # Called directly there is no task context: the example falls back to "free" and
    # task_log() does nothing.
    assert seed.process_invoice(1) is None


async def test_tags_from_a_plan_the_route_was_given(
    load_seed_app: Loader, wait_for: WaitFor
) -> None:
    seed = load_seed_app("at_tags")
    async with serving(seed) as client:
        ids = [
            (await client.post("/invoice", params={"user_id": n, "plan": plan})).json()["task_id"]
            for n, plan in [(1, "free"), (2, "team")]
        ]
        records = [await finished(seed, task_id, wait_for) for task_id in ids]
    assert [r.tags["plan"] for r in records] == ["free", "team"]
    assert [r.logs[0].extra for r in records] == [
        {"user_id": 1, "plan": "free"},
        {"user_id": 2, "plan": "team"},
    ]
    page = await seed.task_manager.store.aquery(tags={"plan": "team"})
    assert [r.task_id for r in page.items] == [ids[1]]


# -- Adding tasks outside a route --------------------------------------------------------


async def test_adding_tasks_outside_a_route_from_startup(
    load_seed_app: Loader, wait_for: WaitFor
) -> None:
    seed = load_seed_app("at_outside_route")
    assert seed.make_background_func is fastapi_taskflow.executor.make_background_func
    transport = httpx.ASGITransport(app=seed.app)
    async with (
        seed.app.router.lifespan_context(seed.app),  # runs on_startup()
        httpx.AsyncClient(transport=transport, base_url="http://seed") as client,
    ):

        async def synced() -> list[dict[str, Any]] | None:
            records: list[dict[str, Any]] = (await client.get("/_glue/sync_database")).json()
            return records if records and records[0]["status"] == "success" else None

        (record,) = await wait_for(synced)
    assert assert_task_id(record["task_id"])
    assert record["result"] == "synced"
    assert seed.calls == [("sync_database", (), {})]


async def test_adding_tasks_outside_a_route_as_a_startup_handler(
    load_seed_app: Loader, wait_for: WaitFor
) -> None:
    """on_startup registered as a plain startup handler: nobody entered the manager."""
    seed = load_seed_app("at_outside_route")
    app = FastAPI(on_startup=[seed.on_startup])
    try:
        async with app.router.lifespan_context(app):

            async def synced() -> list[TaskRecord] | None:
                page = await seed.task_manager.store.aquery(
                    func_name=f"{seed.__name__}.sync_database"
                )
                items = page.items
                return items if items and items[0].status is TaskStatus.SUCCESS else None

            (record,) = await wait_for(synced)
    finally:
        await seed.task_manager.shutdown()
    assert record.result == "synced"
    assert seed.calls == [("sync_database", (), {})]


async def test_idempotency_key_across_instances(
    load_seed_app: Loader, wait_for: WaitFor, seed_backend_url: str
) -> None:
    """Two app instances on one shared backend: one task per key between them."""
    if seed_backend_url.startswith("memory:"):
        pytest.skip("memory:// is one store per TaskManager; nothing is shared")
    one, two = load_seed_app("at_idempotency"), load_seed_app("at_idempotency")
    async with (
        serving(one) as c1,
        serving(two) as c2,
    ):
        responses = await asyncio.gather(
            *(c.post("/invoice/9/send") for c in (c1, c2, c1, c2, c1, c2))
        )
        ids = {r.json()["task_id"] for r in responses}
        assert len(ids) == 1
        (task_id,) = ids
        for seed in (one, two):
            record = await finished(seed, task_id, wait_for)
            assert record.status is TaskStatus.SUCCESS
    assert len(one.calls) + len(two.calls) == 1


async def test_tags_example_retries_and_keeps_its_tags_on_every_attempt(
    load_seed_app: Loader, wait_for: WaitFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """process_invoice is registered with retries=2: make its first attempt fail."""
    seed = load_seed_app("at_tags")
    observer = MemoryObserver()
    seed.task_manager.observers.add(observer)
    real_task_log = seed.task_log
    attempts: list[int] = []

    def flaky_task_log(*args: Any, **kwargs: Any) -> None:
        ctx = seed.get_task_context()
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise ConnectionError("billing service unavailable")
        real_task_log(*args, **kwargs)

    monkeypatch.setattr(seed, "task_log", flaky_task_log)
    async with serving(seed) as client:
        response = await client.post("/invoice", params={"user_id": 42, "plan": "pro"})
        task_id = response.json()["task_id"]
        record = await finished(seed, task_id, wait_for)

        def observed() -> list[Any] | None:
            events = observer.for_task(task_id)
            done = any(getattr(e, "status", None) is TaskStatus.SUCCESS for e in events)
            logs = [e for e in events if isinstance(e, LogEvent)]
            return events if done and len(logs) >= 3 else None

        events = await wait_for(observed)
    assert record.status is TaskStatus.SUCCESS
    assert record.attempt == 2
    assert attempts == [1, 2]
    assert record.tags == TAGS
    assert any("billing service unavailable" in e.message for e in record.logs)
    assert [e.extra for e in record.logs if e.message == "Processing invoice"] == [
        {"user_id": 42, "plan": "pro"}
    ]
    statuses = [e.status for e in events if isinstance(e, LifecycleEvent)]
    assert statuses == [
        TaskStatus.RUNNING,
        TaskStatus.PENDING,
        TaskStatus.RUNNING,
        TaskStatus.SUCCESS,
    ]
    assert all(e.tags == TAGS for e in events), events
    assert {e.attempt for e in events if isinstance(e, LogEvent)} == {1, 2}
