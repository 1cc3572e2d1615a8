"""Every example app under examples/ does what its documentation page says.

Each example is imported by path and driven through ``httpx.ASGITransport`` inside
``async with task_manager:`` (the transport does not run lifespans). Waiting is always
polling with a deadline. Example modules keep their state at module level, so tests use
values of their own (ids, e-mail addresses) instead of clearing it.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import Depends, FastAPI

from fastapi_taskflow import (
    BackendNotFoundError,
    BackendURLError,
    EagerDispatchError,
    InvalidTaskError,
    LifecycleEvent,
    ManagedBackgroundTasks,
    QueueFullError,
    TaskflowError,
    TaskManager,
    TaskRecord,
    TaskStatus,
    get_task_context,
    task_log,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
T = TypeVar("T")


TEST_TIMEOUT = 30.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def async_test(test: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Mark ``test`` for anyio and fail it (instead of freezing the run) if it hangs."""

    @functools.wraps(test)
    async def bounded(*args: Any, **kwargs: Any) -> None:
        try:
            await asyncio.wait_for(test(*args, **kwargs), TEST_TIMEOUT)
        except asyncio.TimeoutError:
            pytest.fail(f"{test.__name__} hung for {TEST_TIMEOUT}s")

    return pytest.mark.anyio(bounded)


@functools.cache
def example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` once, as module ``taskflow_examples.<name>``."""
    spec = importlib.util.spec_from_file_location(
        f"taskflow_examples.{name}", EXAMPLES / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@asynccontextmanager
async def serve(app: FastAPI, *managers: TaskManager) -> AsyncIterator[httpx.AsyncClient]:
    """Start the managers and yield a client talking to ``app`` in process."""
    for manager in managers:
        await manager.startup()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client
    finally:
        for manager in reversed(managers):
            await manager.shutdown()


async def eventually(
    probe: Callable[[], Awaitable[T]],
    check: Callable[[T], bool],
    within: float = 5.0,
) -> T:
    """Call ``probe`` until ``check`` accepts its result; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s; last value: {value!r}")
        await asyncio.sleep(0.01)


async def wait_record(
    manager: TaskManager, task_id: str, check: Callable[[TaskRecord], bool], within: float = 5.0
) -> TaskRecord:
    async def probe() -> TaskRecord | None:
        return await manager.store.aget(task_id)

    record = await eventually(probe, lambda r: r is not None and check(r), within)
    assert record is not None
    return record


def status_is(*statuses: TaskStatus) -> Callable[[TaskRecord], bool]:
    return lambda record: record.status in statuses


async def wait_until(check: Callable[[], bool], within: float = 5.0) -> None:
    async def probe() -> bool:
        return check()

    await eventually(probe, bool, within)


class Gate:
    """An async task function that blocks its queue slot until released."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def __call__(self) -> None:
        await self.event.wait()


# -- index.md: quickstart -------------------------------------------------------------


@async_test
async def test_quickstart_returns_an_id_and_the_task_runs() -> None:
    qs = example("quickstart")
    async with serve(qs.app, qs.task_manager) as client:
        response = await client.post("/signup", params={"email": "ada@quickstart.test"})
        assert response.status_code == 200
        task_id = response.json()["task_id"]

        async def status() -> dict[str, Any]:
            return (await client.get(f"/tasks/{task_id}")).json()

        body = await eventually(status, lambda b: b["status"] == "success")
        assert body == {"status": "success", "attempt": 1, "error": None}
        assert "ada@quickstart.test" in qs.outbox
        assert (await client.get("/tasks/no-such-task")).status_code == 404


@async_test
async def test_installed_app_writes_tasks_before_the_response_starts() -> None:
    qs = example("quickstart")
    seen_at_response_start: list[int] = []

    async def outer(scope: Any, receive: Any, send: Any) -> None:
        async def checking_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                # Read the backend directly, bypassing the in-process buffer.
                stats = await qs.task_manager.backend.stats()
                seen_at_response_start.append(stats.total)
            await send(message)

        await qs.app(scope, receive, checking_send)

    async with serve(qs.app, qs.task_manager):
        before = (await qs.task_manager.backend.stats()).total
        transport = httpx.ASGITransport(app=outer)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.post("/signup", params={"email": "durable@quickstart.test"})
        assert response.status_code == 200
        assert seen_at_response_start == [before + 1]


# -- adding-tasks.md ------------------------------------------------------------------


@async_test
async def test_arguments_positional_keyword_and_mixed() -> None:
    ex = example("adding_tasks")
    tm = ex.task_manager
    async with serve(ex.app, tm) as client:
        a = (await client.post("/signup", params={"email": "pos@adding.test"})).json()
        b = (await client.post("/signup-by-keyword", params={"email": "kw@adding.test"})).json()
        c = (await client.post("/images/7/resize")).json()
        for body in (a, b, c):
            await wait_record(tm, body["task_id"], status_is(TaskStatus.SUCCESS))
        assert {"pos@adding.test", "kw@adding.test"} <= set(ex.sent)
        assert (7, 800, 600) in ex.resized
        record = await tm.store.aget(c["task_id"])
        assert record is not None
        assert record.result == "7@800x600"
        assert record.args == [7]
        assert record.kwargs == {"width": 800, "height": 600}


@async_test
async def test_status_routes_sync_and_async_agree() -> None:
    ex = example("adding_tasks")
    async with serve(ex.app, ex.task_manager) as client:
        task_id = (await client.post("/signup", params={"email": "st@adding.test"})).json()[
            "task_id"
        ]
        await wait_record(ex.task_manager, task_id, status_is(TaskStatus.SUCCESS))
        sync_body = (await client.get(f"/tasks/{task_id}")).json()
        async_body = (await client.get(f"/async/tasks/{task_id}")).json()
        assert sync_body == async_body
        assert sync_body["task_id"] == task_id
        assert sync_body["status"] == "success"
        assert (await client.get("/tasks/nope")).status_code == 404
        assert (await client.get("/async/tasks/nope")).status_code == 404


@async_test
async def test_dependency_without_install_writes_within_a_loop_iteration() -> None:
    ex = example("adding_tasks")
    tm = ex.task_manager
    async with serve(ex.app, tm) as client:
        task_id = (await client.post("/signup", params={"email": "wb@adding.test"})).json()[
            "task_id"
        ]

        async def raw() -> TaskRecord | None:
            return await tm.backend.get(task_id)  # the backend itself, no buffer

        await eventually(raw, lambda r: r is not None, within=2.0)


@async_test
async def test_eager_routes_run_the_task() -> None:
    ex = example("adding_tasks")
    async with serve(ex.app, ex.task_manager) as client:
        a = (await client.post("/users/101/notify")).json()
        b = (await client.post("/users/102/notify-async")).json()
        for body in (a, b):
            await wait_record(ex.task_manager, body["task_id"], status_is(TaskStatus.SUCCESS))
        assert {101, 102} <= set(ex.notified)


@async_test
async def test_eager_starts_before_the_response_and_default_after() -> None:
    ex = example("adding_tasks")
    tm = ex.task_manager
    app = FastAPI()

    @app.post("/eager-sync")
    def eager_sync(
        tasks: ManagedBackgroundTasks = Depends(tm.get_tasks),  # noqa: B008
    ) -> dict[str, str]:
        task_id = tasks.add_task(ex.notify, 201, eager=True)
        deadline = time.monotonic() + 5
        while 201 not in ex.notified and time.monotonic() < deadline:
            time.sleep(0.005)
        return {"ran_before_response": str(201 in ex.notified), "task_id": task_id}

    @app.post("/eager-async")
    async def eager_async(
        tasks: ManagedBackgroundTasks = Depends(tm.get_tasks),  # noqa: B008
    ) -> dict[str, str]:
        task_id = tasks.add_task(ex.notify, 202, eager=True)
        await wait_until(lambda: 202 in ex.notified)
        return {"ran_before_response": "True", "task_id": task_id}

    @app.post("/default-async")
    async def default_async(
        tasks: ManagedBackgroundTasks = Depends(tm.get_tasks),  # noqa: B008
    ) -> dict[str, str]:
        task_id = tasks.add_task(ex.notify, 203)
        for _ in range(20):
            await asyncio.sleep(0.005)
        record = await tm.store.aget(task_id)
        assert record is not None
        return {"status_in_route": record.status.value, "task_id": task_id}

    async with serve(app, tm) as client:
        assert (await client.post("/eager-sync")).json()["ran_before_response"] == "True"
        assert (await client.post("/eager-async")).json()["ran_before_response"] == "True"
        body = (await client.post("/default-async")).json()
        assert body["status_in_route"] == "pending"
        await wait_record(tm, body["task_id"], status_is(TaskStatus.SUCCESS))
        assert 203 in ex.notified


@async_test
async def test_priority_route_goes_through_the_queue() -> None:
    ex = example("adding_tasks")
    async with serve(ex.app, ex.task_manager) as client:
        task_id = (await client.post("/otp", params={"phone": "+100"})).json()["task_id"]
        record = await wait_record(ex.task_manager, task_id, status_is(TaskStatus.SUCCESS))
        assert record.priority == 9
        assert "+100" in ex.otps


@async_test
async def test_outside_requests_startup_hook_and_tasks_enqueuing_tasks() -> None:
    ex = example("outside_requests")
    async with ex.lifespan(ex.app):
        warmup_id = ex.app.state.warmup_task_id
        await wait_record(ex.task_manager, warmup_id, status_is(TaskStatus.SUCCESS))
        assert "us-east" in ex.warmed

        transport = httpx.ASGITransport(app=ex.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            cleanup_id = (await client.post("/cleanup")).json()["task_id"]
        await wait_record(ex.task_manager, cleanup_id, status_is(TaskStatus.SUCCESS))
        await wait_until(lambda: "eu-west" in ex.warmed)


@async_test
async def test_direct_construction_waits_until_awaited() -> None:
    ex = example("outside_requests")
    tm = ex.task_manager
    async with tm:
        tasks = ManagedBackgroundTasks(tm)
        task_id = tasks.add_task(ex.sync_database, "left-alone")
        assert len(tasks.tasks) == 1
        for _ in range(10):
            await asyncio.sleep(0.005)
        record = await tm.store.aget(task_id)
        assert record is not None and record.status is TaskStatus.PENDING
        assert "left-alone" not in ex.synced

        by_hand = await ex.run_by_hand("by-hand")
        assert (await tm.store.aget(by_hand)).status is TaskStatus.SUCCESS  # type: ignore[union-attr]
        assert "by-hand" in ex.synced

        by_func = await ex.run_with_make_background_func("by-func")
        assert (await tm.store.aget(by_func)).status is TaskStatus.SUCCESS  # type: ignore[union-attr]
        assert ex.synced.count("by-func") == 1


@async_test
async def test_awaiting_a_background_func_twice_runs_once() -> None:
    ex = example("outside_requests")
    from fastapi_taskflow.executor import make_background_func

    async with ex.task_manager:
        tasks = ManagedBackgroundTasks(ex.task_manager)
        task_id = tasks.add_task(ex.sync_database, "twice")
        run = make_background_func(ex.task_manager, task_id)
        await run()
        await run()
        await tasks.tasks[-1]()
        assert ex.synced.count("twice") == 1


@async_test
async def test_direct_construction_starts_eager_and_priority_tasks_by_itself() -> None:
    ex = example("outside_requests")
    async with ex.task_manager:
        tasks = ManagedBackgroundTasks(ex.task_manager)
        eager_id = tasks.add_task(ex.sync_database, "eager", eager=True)
        prio_id = tasks.add_task(ex.sync_database, "prio", priority=5)
        assert tasks.tasks == []  # neither waits in the list
        for task_id in (eager_id, prio_id):
            await wait_record(ex.task_manager, task_id, status_is(TaskStatus.SUCCESS))


# -- task-manager.md ------------------------------------------------------------------


@async_test
async def test_three_injection_patterns() -> None:
    ex = example("injection")
    async with serve(ex.app, ex.task_manager) as client:
        ids = []
        for path in ("/signup/dependency", "/signup/annotation", "/signup/bare"):
            body = (await client.post(path, params={"email": f"{path}@inj.test"})).json()
            ids.append(body["task_id"])
            if path.endswith("bare"):
                assert body["class"] == "ManagedBackgroundTasks"
        for task_id in ids:
            await wait_record(ex.task_manager, task_id, status_is(TaskStatus.SUCCESS))
        assert {"/signup/dependency@inj.test", "/signup/bare@inj.test"} <= set(ex.welcomed)


@async_test
async def test_install_wraps_the_lifespan() -> None:
    ex = example("injection")
    async with ex.app.router.lifespan_context(ex.app):
        transport = httpx.ASGITransport(app=ex.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            body = (await client.post("/signup/bare", params={"email": "ls@inj.test"})).json()
        await wait_record(ex.task_manager, body["task_id"], status_is(TaskStatus.SUCCESS))


@async_test
async def test_two_apps_two_managers_never_mix() -> None:
    ex = example("two_apps")
    async with ex.billing_tasks, ex.email_tasks:
        results = {}
        for name in ("billing", "emails", "legacy"):
            transport = httpx.ASGITransport(app=getattr(ex, name))
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                results[name] = (await client.post("/work")).json()

        assert results["legacy"] == {"task_id": None, "class": "BackgroundTasks"}
        billing_id = results["billing"]["task_id"]
        emails_id = results["emails"]["task_id"]
        await wait_record(ex.billing_tasks, billing_id, status_is(TaskStatus.SUCCESS))
        await wait_record(ex.email_tasks, emails_id, status_is(TaskStatus.SUCCESS))
        assert await ex.billing_tasks.store.aget(emails_id) is None
        assert await ex.email_tasks.store.aget(billing_id) is None
        await wait_until(lambda: {"billing", "emails", "legacy"} <= set(ex.done))


def test_backend_selection_by_url_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert TaskManager(backend="memory://").backend.durable is False
    monkeypatch.setenv("TASKFLOW_BACKEND", "memory://")
    assert TaskManager().backend.durable is False
    monkeypatch.setenv("TASKFLOW_BACKEND", "nosuch://somewhere")
    with pytest.raises(BackendNotFoundError, match="taskflow.backends"):
        TaskManager()


# -- retries.md -----------------------------------------------------------------------


@async_test
async def test_retries_with_backoff_then_success() -> None:
    ex = example("retries")
    tm = ex.task_manager
    async with serve(ex.app, tm) as client:
        started = time.monotonic()
        task_id = (await client.post("/orders/1/charge")).json()["task_id"]

        async def status() -> dict[str, Any]:
            return (await client.get(f"/tasks/{task_id}")).json()

        waiting = await eventually(status, lambda b: b["status"] == "pending" and b["attempt"])
        assert waiting["error"] == "ConnectionError: gateway unavailable"
        assert waiting["max_retries"] == 3

        done = await eventually(status, lambda b: b["status"] == "success")
        elapsed = time.monotonic() - started
        assert done["attempt"] == 3
        assert done["result"] == "receipt-1"
        assert done["error"] is None
        assert ex.gateway.calls[1] == 3
        assert elapsed >= 0.2 + 0.4 - 0.05  # delay, then delay * backoff

        record = await tm.store.aget(task_id)
        assert record is not None
        messages = [entry.message for entry in record.logs]
        assert "retrying in 0.2s (retry 1 of 3)" in messages
        assert "retrying in 0.4s (retry 2 of 3)" in messages


@async_test
async def test_a_waiting_retry_blocks_nothing() -> None:
    ex = example("retries")
    tm = ex.task_manager
    async with serve(ex.app, tm) as client:
        crm_id = (await client.post("/accounts/9/sync")).json()["task_id"]
        waiting = await wait_record(tm, crm_id, lambda r: r.attempt == 1)
        assert waiting.status is TaskStatus.PENDING

        other_id = (await client.post("/orders/2/charge")).json()["task_id"]
        await wait_record(tm, other_id, status_is(TaskStatus.SUCCESS))
        still = await tm.store.aget(crm_id)
        assert still is not None
        assert still.status is TaskStatus.PENDING and still.attempt == 1


@async_test
async def test_unregistered_function_runs_once() -> None:
    ex = example("retries")
    async with serve(ex.app, ex.task_manager) as client:
        task_id = (await client.post("/orders/5/audit")).json()["task_id"]
        record = await wait_record(ex.task_manager, task_id, status_is(TaskStatus.FAILED))
        assert record.attempt == 1
        assert record.max_retries == 0
        assert record.error == "RuntimeError: audit of order 5 failed"


@async_test
async def test_retry_on_fails_at_once_what_it_does_not_name() -> None:
    ex = example("retries")
    tm = ex.task_manager
    async with serve(ex.app, tm) as client:
        task_id = (await client.post("/orders/-3/refund")).json()["task_id"]
        record = await wait_record(tm, task_id, status_is(TaskStatus.FAILED))
        assert record.attempt == 1  # retries=8, but a ValueError is not retried
        assert record.error == "ValueError: no order -3: nothing to refund"
        assert "not retried: retry_on takes only ConnectionError, TimeoutError" in (
            record.logs[0].message
        )
        config = tm.registry.by_name(record.func_name).config
        for failed, computed in enumerate([1, 4, 16, 30, 30, 30], start=1):
            draws = [config.retry_delay(failed) for _ in range(100)]  # jitter=1
            assert all(0 <= d <= computed for d in draws) and len(set(draws)) > 50


# -- idempotency.md -------------------------------------------------------------------


@async_test
async def test_same_key_same_task() -> None:
    ex = example("idempotency")
    tm = ex.task_manager
    async with serve(ex.app, tm) as client:
        first = (await client.post("/invoice/41/send")).json()["task_id"]
        await wait_record(tm, first, status_is(TaskStatus.SUCCESS))
        again = (await client.post("/invoice/41/send")).json()["task_id"]
        assert again == first  # a SUCCESS task still holds its key
        responses = await asyncio.gather(*(client.post("/invoice/42/send") for _ in range(10)))
        ids = {r.json()["task_id"] for r in responses}
        assert len(ids) == 1
        await wait_record(tm, ids.pop(), status_is(TaskStatus.SUCCESS))
        assert ex.emailed.count(41) == 1
        assert ex.emailed.count(42) == 1
        holder = await tm.store.afind_by_key("invoice-41")
        assert holder is not None and holder.task_id == first


@async_test
async def test_failed_task_releases_its_key() -> None:
    ex = example("idempotency")
    tm = ex.task_manager
    async with serve(ex.app, tm) as client:
        first = (await client.post("/ledger/3/export")).json()["task_id"]
        failed = await wait_record(tm, first, status_is(TaskStatus.FAILED))
        assert failed.idempotency_key == "ledger-3"

        second = (await client.post("/ledger/3/export")).json()["task_id"]
        assert second != first
        await wait_record(tm, second, status_is(TaskStatus.SUCCESS))
        assert ex.exports.count(3) == 2
        assert (await client.post("/ledger/3/export")).json()["task_id"] == second


@async_test
async def test_a_retried_task_takes_its_key_back() -> None:
    ex = example("idempotency_retry")
    tm = ex.task_manager
    async with serve(ex.app, tm) as client:
        first = (await client.post("/orders/8/refund")).json()["task_id"]
        await wait_record(tm, first, status_is(TaskStatus.FAILED))
        assert await tm.store.afind_by_key("refund-8") is None  # FAILED released it

        retried = await client.post(f"/tasks/api/tasks/{first}/retry")
        assert retried.status_code == 200, retried.text
        # The request sent again finds the retried task, pending, running or done.
        again = (await client.post("/orders/8/refund")).json()["task_id"]
        assert again == first
        await wait_record(tm, first, status_is(TaskStatus.SUCCESS))
        assert (await client.post("/orders/8/refund")).json()["task_id"] == first
        assert ex.refunded == [8], "the order was refunded more than once"
        assert ex.attempts == [8, 8]


# -- tags-and-context.md --------------------------------------------------------------


@async_test
async def test_tags_context_and_logs() -> None:
    ex = example("tags_and_context")
    tm = ex.task_manager
    async with serve(ex.app, tm) as client:
        task_id = (await client.post("/invoice", params={"user_id": 7, "plan": "pro"})).json()[
            "task_id"
        ]
        record = await wait_record(tm, task_id, status_is(TaskStatus.SUCCESS))
        assert record.tags == {"user_id": "7", "plan": "pro", "source": "api"}
        assert record.result["task_id"] == task_id
        assert record.result["func_name"].endswith("process_invoice")
        assert record.result["attempt"] == 1
        assert record.result["amount"] == 20

        logs = (await client.get(f"/tasks/{task_id}/logs")).json()
        assert {"level": "info", "message": "processing invoice", "attempt": 1} | {
            "user_id": 7,
            "plan": "pro",
        } in logs
        assert {"level": "debug", "message": "looking up price", "attempt": 1, "plan": "pro"} in (
            logs
        )

        free_id = (await client.post("/invoice", params={"user_id": 8, "plan": "free"})).json()[
            "task_id"
        ]
        await wait_record(tm, free_id, status_is(TaskStatus.SUCCESS))
        free_logs = (await client.get(f"/tasks/{free_id}/logs")).json()
        assert any(
            e["level"] == "warning" and e["message"] == "nothing to charge" for e in free_logs
        )


@async_test
async def test_a_long_task_s_logs_can_be_read_while_it_runs() -> None:
    ex = example("tags_and_context")
    tm = ex.task_manager
    async with serve(ex.app, tm) as client:
        # httpx's in-process transport answers once the request's background tasks are
        # done: the request goes on in an asyncio task while the test reads the logs
        request = asyncio.ensure_future(client.post("/exports", params={"batches": 6}))

        async def running() -> list[Any]:
            return (await tm.store.aquery(func_name="export_invoices")).items

        [task] = await eventually(running, lambda items: len(items) == 1)
        task_id = task.task_id

        async def logs() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = (await client.get(f"/tasks/{task_id}/logs")).json()
            return found

        so_far = await eventually(logs, lambda lines: len(lines) >= 1, within=10)
        record = await tm.store.aget(task_id)
        assert record is not None and record.status is TaskStatus.RUNNING
        assert so_far[0] == {
            "level": "info",
            "message": "exported batch",
            "attempt": 1,
            "batch": 1,
            "of": 6,
        }
        assert (await request).json() == {"task_id": task_id}
        await wait_record(tm, task_id, status_is(TaskStatus.SUCCESS))
        assert [line["batch"] for line in await logs()] == [1, 2, 3, 4, 5, 6]


def test_context_outside_a_task() -> None:
    ex = example("tags_and_context")
    assert get_task_context() is None
    task_log("ignored outside a task")  # no error, no effect
    assert ex.price_for("pro") == 20


@async_test
async def test_tags_are_validated() -> None:
    ex = example("tags_and_context")
    async with ex.task_manager:
        tasks = ManagedBackgroundTasks(ex.task_manager)
        with pytest.raises(InvalidTaskError, match=r"dict\[str, str\]"):
            tasks.add_task(ex.process_invoice, 1, tags={"user_id": 1})
        with pytest.raises(InvalidTaskError):
            tasks.add_task(ex.process_invoice, 1, tags=["plan"])


@async_test
async def test_invalid_log_level_is_rejected_inside_a_task() -> None:
    tm = TaskManager()

    @tm.task()
    def bad_level() -> None:
        task_log("x", level="verbose")

    async with tm:
        task_id = tm.add_task(bad_level)
        record = await wait_record(tm, task_id, status_is(TaskStatus.FAILED))
        assert record.error is not None
        assert record.error.startswith("InvalidTaskError: unknown log level 'verbose'")


# -- observers.md ---------------------------------------------------------------------


@async_test
async def test_observers_receive_events_and_a_broken_one_is_harmless(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ex = example("observers")
    tm = ex.task_manager
    caplog.set_level(logging.INFO)
    async with serve(ex.app, tm) as client:
        task_id = (await client.post("/reports/12")).json()["task_id"]
        record = await wait_record(tm, task_id, status_is(TaskStatus.SUCCESS))
        assert record.func_name == "reports.build"

        def seen(kind: str) -> list[Any]:
            return [e for e in ex.memory.for_task(task_id) if e.type == kind]

        await wait_until(lambda: len(seen("lifecycle")) == 2 and len(seen("log")) == 2)
        assert [e.status for e in seen("lifecycle")] == [TaskStatus.RUNNING, TaskStatus.SUCCESS]
        for event in seen("lifecycle") + seen("log"):
            assert event.tags == {"report_id": "12"}
            assert event.func_name == "reports.build"
            assert event.attempt == 1
            assert event.instance_id == tm.instance_id
        log = seen("log")[0]
        assert (log.level, log.message, log.extra) == ("info", "building report", {"report_id": 12})

        await wait_until(lambda: ex.counter.statuses[("reports.build", "success")] >= 1)
        assert ex.counter.statuses[("reports.build", "running")] >= 1
        assert ex.counter.warnings >= 1

        await wait_until(
            lambda: any(
                r.name == "myapp.tasks" and task_id in r.getMessage() for r in caplog.records
            )
        )
        assert any(
            r.name == "fastapi_taskflow" and "BrokenObserver" in r.getMessage()
            for r in caplog.records
        )


# -- priorities-and-queues.md ---------------------------------------------------------


@async_test
async def test_higher_priority_first_fifo_among_equals() -> None:
    ex = example("priorities")
    tm = ex.task_manager
    gate = Gate()
    async with serve(ex.app, tm) as client:
        # Occupy the default queue's single slot so everything below waits together.
        hold_id = ManagedBackgroundTasks(tm).add_task(gate, priority=100)
        await wait_record(tm, hold_id, status_is(TaskStatus.RUNNING))
        start = len(ex.delivered)
        for message, priority in [("low", 1), ("first-5", 5), ("mid", 3), ("second-5", 5)]:
            response = await client.post(
                "/messages", params={"message": message, "priority": priority}
            )
            assert response.status_code == 200
        otp_id = (await client.post("/otp", params={"phone": "555"})).json()["task_id"]
        otp = await tm.store.aget(otp_id)
        assert otp is not None and otp.priority == 9  # from the decorator

        gate.event.set()
        await wait_until(lambda: len(ex.delivered) - start == 5)
        assert ex.delivered[start:] == ["otp:555", "first-5", "second-5", "mid", "low"]


@async_test
async def test_full_queue_rejects_with_429() -> None:
    ex = example("priorities")
    tm = ex.task_manager
    gate = Gate()
    tm.task(queue="reports", name="tests.hold_reports")(gate)
    async with serve(ex.app, tm) as client:
        hold_id = ManagedBackgroundTasks(tm).add_task(gate)
        await wait_record(tm, hold_id, status_is(TaskStatus.RUNNING))

        ok = [await client.post(f"/reports/{n}") for n in (1, 2)]
        assert [r.status_code for r in ok] == [200, 200]
        refused = await client.post("/reports/3")
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "30"
        rejected_id = refused.json()["detail"]["task_id"]
        rejected = await tm.store.aget(rejected_id)
        assert rejected is not None and rejected.status is TaskStatus.REJECTED

        gate.event.set()
        for response in ok:
            await wait_record(tm, response.json()["task_id"], status_is(TaskStatus.SUCCESS))
        assert 3 not in ex.reports


def test_bare_manager_needs_no_startup_call() -> None:
    tm = TaskManager()
    app = FastAPI()
    tm.install(app)
    ran: list[int] = []

    async def job(n: int) -> None:
        ran.append(n)

    @app.post("/go")
    def go(background_tasks: ManagedBackgroundTasks) -> dict[str, str]:
        return {"task_id": background_tasks.add_task(job, 1, priority=3)}

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            task_id = (await client.post("/go")).json()["task_id"]
        await wait_record(tm, task_id, status_is(TaskStatus.SUCCESS))
        await tm.shutdown()

    asyncio.run(main())
    assert ran == [1]


# -- errors.md ------------------------------------------------------------------------


@async_test
async def test_error_handlers() -> None:
    ex = example("errors")
    tm = ex.task_manager
    gate = Gate()
    tm.task(queue="imports", name="tests.hold_imports")(gate)
    async with serve(ex.app, tm) as client:
        hold_id = ManagedBackgroundTasks(tm).add_task(gate)
        await wait_record(tm, hold_id, status_is(TaskStatus.RUNNING))

        accepted = await client.post("/imports", params={"name": "a.csv", "label": "q1"})
        assert accepted.status_code == 200
        full = await client.post("/imports", params={"name": "b.csv", "label": "q1"})
        assert full.status_code == 429
        assert full.headers["Retry-After"] == "10"
        assert full.json()["detail"] == "the imports queue is full, retry later"

        bad = await client.post("/imports", params={"name": "c.csv"})
        assert bad.status_code == 400
        assert "dict[str, str]" in bad.json()["detail"]

        gate.event.set()
        await wait_record(tm, accepted.json()["task_id"], status_is(TaskStatus.SUCCESS))
        assert ex.imported.count("a.csv") == 1
        assert "b.csv" not in ex.imported


def test_store_down_names_no_password_and_no_address() -> None:
    """examples/store_down.py as a user runs it: refused, logged, nothing secret."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "store_down.py")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "refused: the task store is unreachable, so no task was accepted" in result.stdout
    logged = result.stderr
    assert "WARNING fastapi_taskflow: the task store is unreachable at startup" in logged
    assert "Connect call failed ('<host>', 9)" in logged  # the driver's reason, masked
    for secret in ("s3cret", "127.0.0.1"):
        assert secret not in result.stdout + logged


def test_configuration_errors() -> None:
    with pytest.raises(BackendNotFoundError) as not_found:
        TaskManager(backend="nosuch://host")
    assert "nosuch://" in str(not_found.value)
    with pytest.raises(BackendURLError):
        TaskManager(backend="not a url")
    tm = TaskManager()
    with pytest.raises(InvalidTaskError, match="retries"):
        tm.task(retries=-1)
    with pytest.raises(InvalidTaskError, match="backoff"):
        tm.task(backoff=0.5)
    with pytest.raises(InvalidTaskError, match="priority"):
        ManagedBackgroundTasks(tm).add_task(print, priority="high")
    with pytest.raises(InvalidTaskError, match="callable"):
        ManagedBackgroundTasks(tm).add_task("not a function")
    for cls in (BackendNotFoundError, BackendURLError, InvalidTaskError, QueueFullError):
        assert issubclass(cls, TaskflowError)


def test_eager_without_a_loop_is_an_error() -> None:
    tm = TaskManager()
    tasks = ManagedBackgroundTasks(tm)
    with pytest.raises(EagerDispatchError):
        tasks.add_task(print, "hi", eager=True)
    tasks.add_task(print, "hi")  # fine: waits in tasks.tasks
    assert len(tasks.tasks) == 1


# -- architecture.md ------------------------------------------------------------------


@async_test
async def test_store_reads_sync_async_query_and_stats() -> None:
    ex = example("store_access")
    tm = ex.task_manager
    async with serve(ex.app, tm) as client:
        body = (await client.post("/images/3/thumbnail")).json()
        assert body["status"] == "pending"
        task_id = body["task_id"]
        await wait_record(tm, task_id, status_is(TaskStatus.SUCCESS))
        assert (await client.get(f"/tasks/{task_id}")).json() == (
            await client.get(f"/async/tasks/{task_id}")
        ).json()
        listed = (await client.get("/tasks", params={"status": "success"})).json()
        assert task_id in [item["task_id"] for item in listed["items"]]
        stats = (await client.get("/stats")).json()
        assert stats["total"] >= 1
        assert stats["by_status"]["success"] >= 1


# -- testing.md -----------------------------------------------------------------------


def test_the_testing_example_passes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "examples/testing.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_managed_is_both_a_fastapi_and_a_starlette_background_tasks() -> None:
    import fastapi
    from starlette.background import BackgroundTasks as StarletteBackgroundTasks

    tasks = ManagedBackgroundTasks(TaskManager())
    assert isinstance(tasks, StarletteBackgroundTasks)
    assert isinstance(tasks, fastapi.BackgroundTasks)


@async_test
async def test_migrating_the_same_route_gets_ids_once_installed() -> None:
    """docs/migrating-from-backgroundtasks.md: the unchanged route returns None from
    add_task() without install(), a stored task's id with it; both run the task."""
    mod = example("migrating")
    async with serve(mod.plain_app) as plain:
        before = (await plain.post("/orders/1")).json()
    assert before == {"order_id": 1, "add_task_returned": None}
    async with serve(mod.app, mod.task_manager) as client:
        after = (await client.post("/orders/2")).json()
        task_id = after["add_task_returned"]
        assert isinstance(task_id, str)
        record = await eventually(
            lambda: mod.task_manager.store.aget(task_id),
            lambda r: r is not None and r.status is TaskStatus.SUCCESS,
        )
        assert record.func_name.endswith("send_receipt") and record.args == [2]
    assert mod.sent == [1, 2]


# -- durability.md: published while someone reads ---------------------------------------


@async_test
async def test_a_program_of_its_own_reads_every_instance_s_events(tmp_path: Path) -> None:
    """examples/reading_events.py: the reader announces itself, so the app instance
    publishes its tasks' events, and the reader sees a task run and succeed."""
    ex = example("reading_events")
    url = f"sqlite:///{tmp_path / 'tasks.db'}"
    task_manager, app = ex.build_app(url)
    state: dict[str, Any] = {"seen": [], "target": None}

    def stop(seen: list[LifecycleEvent]) -> bool:
        state["seen"] = seen
        return any(e.task_id == state["target"] and e.status is TaskStatus.SUCCESS for e in seen)

    async with serve(app, task_manager) as client:
        await task_manager.store.astats()  # the store exists before the reader opens it
        reader = asyncio.create_task(ex.watch_store(url, stop=stop))
        # The instance publishes from its next read of the readers (twice a second):
        # add reports until one is seen to succeed; the next one is then seen whole.
        report = 0
        while not any(e.status is TaskStatus.SUCCESS for e in state["seen"]):
            await client.post(f"/reports/{report}")
            report += 1
            await asyncio.sleep(0.05)
        response = await client.post("/reports/99")
        state["target"] = response.json()["task_id"]
        while not reader.done():  # its events may all be in: the next ones ask again
            await client.post(f"/reports/{report}")
            await asyncio.wait([reader], timeout=0.05)
        seen = reader.result()
    assert [e.status.value for e in seen if e.task_id == state["target"]] == [
        "running",
        "success",
    ]
    assert {e.func_name for e in seen} == {"reports.build"}
