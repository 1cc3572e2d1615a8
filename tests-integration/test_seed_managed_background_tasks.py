"""The "ManagedBackgroundTasks" reference page: every example, run verbatim.

Seed apps: ``seed_apps/mbt_*.py``, loaded fresh per test on each backend of
``TASKFLOW_SEED_BACKENDS``. The two signature listings (constructor, ``add_task``) are not
runnable code; they are read from the page and compared with the real signatures.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import fastapi
import httpx
import pytest
from starlette.background import BackgroundTask as StarletteBackgroundTask
from starlette.background import BackgroundTasks

from fastapi_taskflow import ManagedBackgroundTasks, MemoryObserver, TaskRecord, TaskStatus
from fastapi_taskflow.events import LifecycleEvent, LogEvent
from fastapi_taskflow.executor import make_background_func

PAGE = (
    Path(__file__).resolve().parents[1]
    / "docs"
    / "reference-pages"
    / "managed-background-tasks.txt"
)

TEST_DEADLINE = 60.0
Loader = Callable[[str], ModuleType]
WaitFor = Callable[..., Awaitable[Any]]


@asynccontextmanager
async def serving(seed: ModuleType) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the seed app, with its task manager started as its lifespan would."""
    transport = httpx.ASGITransport(app=seed.app)
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


async def finished(store: Any, task_id: str, wait_for: WaitFor) -> TaskRecord:
    async def done() -> TaskRecord | None:
        record = await store.aget(task_id)
        return record if record is not None and record.status.is_terminal else None

    record: TaskRecord = await wait_for(done)
    return record


# -- Constructor and add_task signatures (read from the page) ----------------------------


def _listing(start: str, end: str) -> str:
    text = PAGE.read_text()
    match = re.search(rf"^{re.escape(start)}.*?(?=^{re.escape(end)})", text, re.M | re.S)
    assert match, f"listing starting {start!r} not found in {PAGE.name}"
    return match.group(0).strip()


def _documented(listing: str) -> ast.arguments:
    tree = ast.parse(listing + ": ...")
    func = tree.body[-1]
    assert isinstance(func, ast.FunctionDef)
    return func.args


def _params(args: ast.arguments) -> list[tuple[str, str, str | None, str | None]]:
    """(kind, name, annotation, default) of each documented parameter."""
    out: list[tuple[str, str, str | None, str | None]] = []
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    for arg, default in zip(positional, defaults, strict=True):
        out.append(("POSITIONAL_OR_KEYWORD", arg.arg, _src(arg.annotation), _src(default)))
    if args.vararg:
        out.append(("VAR_POSITIONAL", args.vararg.arg, _src(args.vararg.annotation), None))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        out.append(("KEYWORD_ONLY", arg.arg, _src(arg.annotation), _src(default)))
    if args.kwarg:
        out.append(("VAR_KEYWORD", args.kwarg.arg, _src(args.kwarg.annotation), None))
    return out


def _src(node: ast.AST | None) -> str | None:
    return None if node is None else ast.unparse(node)


def _actual(func: Any) -> list[tuple[str, str, str | None, str | None]]:
    out: list[tuple[str, str, str | None, str | None]] = []
    for param in list(inspect.signature(func).parameters.values())[1:]:  # drop self
        annotation = None if param.annotation is param.empty else str(param.annotation)
        default = None if param.default is param.empty else repr(param.default)
        out.append((param.kind.name, param.name, annotation, default))
    return out


def test_constructor_listing_imports_and_matches_the_signature() -> None:
    listing = _listing("from fastapi_taskflow import ManagedBackgroundTasks", "Parameter Type")
    import_line, _, call = listing.partition("\n\n")
    namespace: dict[str, Any] = {}
    exec(import_line, namespace)  # the listing's import, verbatim
    assert namespace["ManagedBackgroundTasks"] is ManagedBackgroundTasks
    assert issubclass(ManagedBackgroundTasks, BackgroundTasks)
    assert call.startswith("ManagedBackgroundTasks(")
    documented = _params(_documented("def " + call))
    assert documented == [
        ("POSITIONAL_OR_KEYWORD", "task_manager", "TaskManager", None),
        ("POSITIONAL_OR_KEYWORD", "background_tasks", "BackgroundTasks | None", "None"),
    ]
    assert _actual(ManagedBackgroundTasks.__init__) == documented


def test_add_task_listing_matches_the_signature() -> None:
    listing = _listing("def add_task(", "Enqueues a function")
    documented = _params(_documented(listing))
    actual = _actual(ManagedBackgroundTasks.add_task)
    # The page abbreviates Callable[..., Any] as Callable; everything else is exact.
    assert actual[0] == ("POSITIONAL_OR_KEYWORD", "func", "Callable[..., Any]", None)
    assert documented[0] == ("POSITIONAL_OR_KEYWORD", "func", "Callable", None)
    assert actual[1:] == documented[1:]
    tree = ast.parse(listing + ": ...").body[0]
    assert isinstance(tree, ast.FunctionDef)
    assert _src(tree.returns) == "str"
    assert inspect.signature(ManagedBackgroundTasks.add_task).return_annotation == "str"


# -- add_task() examples -----------------------------------------------------------------


@pytest.mark.anyio
async def test_basic_enqueue(load_seed_app: Loader, wait_for: WaitFor) -> None:
    seed = load_seed_app("mbt_add_task_examples")
    async with serving(seed) as client:
        body = (await client.post("/email", params={"email": "ada@example.com"})).json()
        task_id = assert_task_id(body["task_id"])
        record = await finished(seed.task_manager.store, task_id, wait_for)
    assert record.status is TaskStatus.SUCCESS
    assert record.args == [] and record.kwargs == {"address": "ada@example.com"}
    assert seed.calls == [("send_email", (), {"address": "ada@example.com"})]


@pytest.mark.anyio
async def test_priority_runs_before_lower_priority_tasks(
    load_seed_app: Loader, wait_for: WaitFor
) -> None:
    seed = load_seed_app("mbt_add_task_examples")
    manager = seed.task_manager
    async with serving(seed) as client:
        # The default queue runs one task at a time; a blocker holds that slot.
        blocker = (await client.post("/_glue/blocker")).json()["task_id"]
        await wait_for(lambda: ("blocker", (), {}) in seed.calls)
        low = (await client.post("/_glue/otp-low", params={"phone": "low"})).json()["task_id"]
        high_body = (await client.post("/otp", params={"phone": "high"})).json()
        high = assert_task_id(high_body["task_id"])
        assert high_body["after_response"] == 0  # queued, not in the after-response list

        # Both OTP tasks wait in the queue behind it.
        await wait_for(lambda: _eq(manager.backend.queue_length("default"), 2))
        assert [c[0] for c in seed.calls] == ["blocker"]
        seed.RELEASE_BLOCKER.set()
        records = [await finished(manager.store, t, wait_for) for t in (blocker, high, low)]
    assert [r.status for r in records] == [TaskStatus.SUCCESS] * 3
    assert [r.priority for r in records] == [1, 9, 2]
    assert seed.calls == [
        ("blocker", (), {}),
        ("send_otp", ("high",), {}),
        ("send_otp", ("low",), {}),
    ]


async def _eq(awaitable: Awaitable[Any], expected: Any) -> bool:
    return bool(await awaitable == expected)


@pytest.mark.anyio
@pytest.mark.parametrize("route", ["/notify", "/notify-async"], ids=["def", "async-def"])
async def test_eager_dispatch_starts_before_the_response(
    route: str, load_seed_app: Loader, wait_for: WaitFor
) -> None:
    seed = load_seed_app("mbt_add_task_examples")
    async with serving(seed) as client:
        # The route waits (up to 3 s) for the task to start before it returns: only an
        # eager task can have started by then.
        body = (await client.post(f"{route}/11")).json()
        task_id = assert_task_id(body["task_id"])
        assert body["started_before_response"] is True
        record = await finished(seed.task_manager.store, task_id, wait_for)
    assert record.status is TaskStatus.SUCCESS
    assert record.args == [11]
    assert seed.calls == [("notify", (11,), {})]


@pytest.mark.anyio
async def test_eager_is_ignored_when_priority_is_set(
    load_seed_app: Loader, wait_for: WaitFor
) -> None:
    seed = load_seed_app("mbt_add_task_examples")
    manager = seed.task_manager
    async with serving(seed) as client:
        await client.post("/_glue/blocker")
        await wait_for(lambda: ("blocker", (), {}) in seed.calls)
        body = (await client.post("/_glue/notify-eager-priority/3")).json()
        task_id = assert_task_id(body["task_id"])
        assert body["after_response"] == 0
        # It waits in the queue behind the blocker instead of starting at once.
        await wait_for(lambda: _eq(manager.backend.queue_length("default"), 1))
        record = await manager.store.aget(task_id)
        assert record is not None
        assert record.status is TaskStatus.PENDING and record.priority == 5
        assert not seed.NOTIFY_STARTED[3].is_set()
        seed.RELEASE_BLOCKER.set()
        record = await finished(manager.store, task_id, wait_for)
    assert record.status is TaskStatus.SUCCESS
    assert seed.calls[-1] == ("notify", (3,), {})


@pytest.mark.anyio
async def test_deduplication(load_seed_app: Loader, wait_for: WaitFor) -> None:
    seed = load_seed_app("mbt_add_task_examples")
    async with serving(seed) as client:
        first = (await client.post("/orders/8/invoice")).json()["task_id"]
        record = await finished(seed.task_manager.store, first, wait_for)
        again = await asyncio.gather(*(client.post("/orders/8/invoice") for _ in range(4)))
        other = (await client.post("/orders/9/invoice")).json()["task_id"]
        await finished(seed.task_manager.store, other, wait_for)
    assert {r.json()["task_id"] for r in again} == {first}
    assert other != first
    assert record.idempotency_key == "invoice:8"
    assert seed.calls == [("generate_invoice", (8,), {}), ("generate_invoice", (9,), {})]


@pytest.mark.anyio
async def test_tags_for_observability(load_seed_app: Loader, wait_for: WaitFor) -> None:
    seed = load_seed_app("mbt_add_task_examples")
    observer = MemoryObserver()
    seed.task_manager.observers.add(observer)
    tags = {"customer_id": "77", "plan": "pro"}
    async with serving(seed) as client:
        body = (await client.post("/payments", params={"amount": 12.5, "customer_id": 77})).json()
        task_id = assert_task_id(body["task_id"])
        record = await finished(seed.task_manager.store, task_id, wait_for)

        def observed() -> list[Any] | None:
            events = observer.for_task(task_id)
            done = any(
                isinstance(e, LifecycleEvent) and e.status is TaskStatus.SUCCESS for e in events
            )
            return events if done and any(isinstance(e, LogEvent) for e in events) else None

        events = await wait_for(observed)
    assert record.status is TaskStatus.SUCCESS
    assert record.tags == tags
    assert seed.calls == [("process_payment", (12.5,), {"tags": tags})]
    assert events and all(e.tags == tags for e in events)
    assert {type(e) for e in events} == {LifecycleEvent, LogEvent}


# -- Injection patterns ------------------------------------------------------------------


@pytest.fixture
def add_task_spy(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every object whose ManagedBackgroundTasks.add_task ran."""
    seen: list[Any] = []
    original = ManagedBackgroundTasks.add_task

    def spy(self: Any, *args: Any, **kwargs: Any) -> str:
        seen.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ManagedBackgroundTasks, "add_task", spy)
    return seen


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["mbt_inject_depends", "mbt_inject_type", "mbt_inject_bare"])
async def test_injection_pattern(
    name: str, load_seed_app: Loader, wait_for: WaitFor, add_task_spy: list[Any]
) -> None:
    seed = load_seed_app(name)
    async with serving(seed) as client:
        response = await client.post("/signup", params={"email": "new@example.com"})
        assert response.status_code == 200, response.text
        await wait_for(lambda: seed.calls)
        (call,) = seed.calls
        task_id = assert_task_id(call[2]["task_id"])  # ran as a managed task
        if name == "mbt_inject_bare":
            assert response.json() is None  # the example's route returns nothing
        else:
            assert response.json() == {"task_id": task_id}
        record = await finished(seed.task_manager.store, task_id, wait_for)
    assert record.status is TaskStatus.SUCCESS
    assert record.func_name == f"{seed.__name__}.send_welcome_email"
    assert record.args == ["new@example.com"]
    assert call[:2] == ("send_welcome_email", ("new@example.com",))
    # The parameter was a ManagedBackgroundTasks of this app's manager at runtime.
    (tasks,) = add_task_spy
    assert isinstance(tasks, ManagedBackgroundTasks)
    assert isinstance(tasks, BackgroundTasks)
    assert tasks.task_manager is seed.task_manager


# -- Direct construction for testing -----------------------------------------------------


def test_direct_construction_task_waits_until_awaited(load_seed_app: Loader) -> None:
    """Built outside any event loop, exactly as the page does at a test's top level."""
    seed = load_seed_app("mbt_direct_construction")
    tm, managed = seed.tm, seed.managed
    task_id = assert_task_id(seed.task_id)
    assert isinstance(managed, BackgroundTasks)
    assert len(managed.tasks) == 1
    # The entry shows the call as FastAPI's own entry would (a test of the app that
    # looks at .func/.args/.kwargs keeps working after the upgrade).
    (entry,) = managed.tasks
    assert isinstance(entry, StarletteBackgroundTask)
    assert (entry.func, entry.args, entry.kwargs) == (seed.my_func, ("hello",), {})

    record = tm.store.get(task_id)
    assert record is not None and record.status is TaskStatus.PENDING
    assert record.args == ["hello"]
    assert seed.calls == []  # not run: no request, no Starlette

    async def run_it() -> TaskRecord | None:
        await managed.tasks[-1]()
        await managed.tasks[-1]()  # awaiting it again does not run it again
        done = await tm.store.aget(task_id)
        await tm.shutdown()
        return done

    done = asyncio.run(run_it())
    assert done is not None and done.status is TaskStatus.SUCCESS
    assert done.result == "HELLO"
    assert seed.calls == [("my_func", ("hello",), {})]
    after = tm.store.get(task_id)  # from sync code again, after the loop ended
    assert after is not None and after.status is TaskStatus.SUCCESS


@pytest.mark.anyio
async def test_direct_construction_inside_a_loop_with_the_executor(
    load_seed_app: Loader, wait_for: WaitFor
) -> None:
    """Built inside a running loop; run through executor.make_background_func."""
    seed = load_seed_app("mbt_direct_construction")
    tm, managed = seed.tm, seed.managed
    async with tm:
        second = managed.add_task(seed.my_func, "world")
        for _ in range(20):  # let the loop turn: nothing may start the tasks by itself
            await asyncio.sleep(0)
        assert seed.calls == []
        record = await tm.store.aget(second)
        assert record is not None and record.status is TaskStatus.PENDING

        await make_background_func(tm, second)()
        record = await tm.store.aget(second)
        assert record is not None and record.status is TaskStatus.SUCCESS
        assert record.result == "WORLD"

        await managed.tasks[0]()
        first = await tm.store.aget(seed.task_id)
        assert first is not None and first.status is TaskStatus.SUCCESS
    assert seed.calls == [("my_func", ("world",), {}), ("my_func", ("hello",), {})]


@pytest.mark.anyio
async def test_zero_migration_parameter_is_an_instance_of_the_annotated_class(
    load_seed_app: Loader, wait_for: WaitFor, add_task_spy: list[Any]
) -> None:
    seed = load_seed_app("mbt_inject_bare")
    assert seed.BackgroundTasks is fastapi.BackgroundTasks  # what the example imports
    async with serving(seed) as client:
        await client.post("/signup", params={"email": "new@example.com"})
        await wait_for(lambda: seed.calls)
    (tasks,) = add_task_spy
    assert isinstance(tasks, seed.BackgroundTasks)
