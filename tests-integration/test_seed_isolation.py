"""install() is scoped to its app: two apps in one process, each with its own manager,
plus an app without install(), all serving the zero-migration seed route at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import ModuleType
from typing import Any

import anyio
import httpx
import pytest
from fastapi import BackgroundTasks, FastAPI
from starlette.background import BackgroundTasks as StarletteBackgroundTasks

from fastapi_taskflow import ManagedBackgroundTasks, TaskStatus

pytestmark = pytest.mark.anyio

Loader = Callable[[str], ModuleType]
WaitFor = Callable[..., Awaitable[Any]]


@asynccontextmanager
async def _deadline(seconds: float = 60.0) -> AsyncIterator[None]:
    with anyio.fail_after(seconds):  # a hang fails the test instead of the run
        yield


def plain_app(seen: list[Any], ran: list[str]) -> FastAPI:
    """An app that never heard of taskflow."""
    app = FastAPI()

    @app.post("/signup")
    def signup(email: str, background_tasks: BackgroundTasks) -> dict[str, Any]:
        seen.append(background_tasks)
        returned = background_tasks.add_task(ran.append, email)
        return {"returned": returned}

    return app


async def test_two_installed_apps_and_a_plain_one_stay_apart(
    load_seed_app: Loader,
    wait_for: WaitFor,
    monkeypatch: pytest.MonkeyPatch,
    seed_backend_url: str,
) -> None:
    a, b = load_seed_app("mbt_inject_bare"), load_seed_app("mbt_inject_bare")
    assert a.task_manager is not b.task_manager
    managed: list[Any] = []
    original = ManagedBackgroundTasks.add_task

    def spy(self: Any, *args: Any, **kwargs: Any) -> str:
        assert isinstance(self, ManagedBackgroundTasks)
        task_id = original(self, *args, **kwargs)
        managed.append((self.task_manager, task_id))
        return task_id

    monkeypatch.setattr(ManagedBackgroundTasks, "add_task", spy)
    plain_seen: list[Any] = []
    plain_ran: list[str] = []
    plain = plain_app(plain_seen, plain_ran)

    def client(app: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")

    async with (
        _deadline(),
        a.task_manager,
        b.task_manager,
        client(a.app) as ca,
        client(b.app) as cb,
        client(plain) as cp,
    ):
        requests = []
        for i in range(4):
            requests += [
                ca.post("/signup", params={"email": f"a{i}@example.com"}),
                cb.post("/signup", params={"email": f"b{i}@example.com"}),
                cp.post("/signup", params={"email": f"p{i}@example.com"}),
            ]
        responses = await asyncio.gather(*requests)  # interleaved, concurrently
        assert all(r.status_code == 200 for r in responses)

        for seed in (a, b):
            prefix = "a" if seed is a else "b"
            expected = [f"{prefix}{i}@example.com" for i in range(4)]
            await wait_for(lambda seed=seed: len(seed.calls) == 4)
            # Each app's tasks ran in that app (its module's task function) ...
            assert sorted(c[1][0] for c in seed.calls) == expected

            async def all_done(seed: ModuleType = seed) -> Any:
                page = await seed.task_manager.store.aquery(
                    func_name=f"{seed.__name__}.send_welcome_email"
                )
                ok = len(page.items) == 4 and all(
                    r.status is TaskStatus.SUCCESS for r in page.items
                )
                return page.items if ok else None

            # ... and are in its manager's store, under the ids its manager handed out.
            records = await wait_for(all_done)
            assert sorted(r.args[0] for r in records) == expected
            assert {r.task_id for r in records} == {c[2]["task_id"] for c in seed.calls}
            assert {r.task_id for r in records} == {
                task_id for manager, task_id in managed if manager is seed.task_manager
            }

        if seed_backend_url.startswith("memory:"):
            # Separate stores: neither manager's store holds a task of the other. (A
            # shared backend URL makes the two apps instances sharing one store.)
            for mine, other in ((a, b), (b, a)):
                for call in mine.calls:
                    assert await other.task_manager.store.aget(call[2]["task_id"]) is None
                    assert await mine.task_manager.store.aget(call[2]["task_id"]) is not None

    # Each installed app's bare BackgroundTasks was a ManagedBackgroundTasks of its own
    # manager; the plain app's were Starlette's own, and add_task returned None there.
    assert len(managed) == 8
    assert sum(manager is a.task_manager for manager, _ in managed) == 4
    assert sum(manager is b.task_manager for manager, _ in managed) == 4
    assert len(plain_seen) == 4
    assert all(isinstance(t, StarletteBackgroundTasks) for t in plain_seen)
    assert not any(isinstance(t, ManagedBackgroundTasks) for t in plain_seen)
    assert [r.json() for r in responses[2::3]] == [{"returned": None}] * 4
    assert sorted(plain_ran) == [f"p{i}@example.com" for i in range(4)]


async def test_app_without_install_keeps_fastapis_own_background_tasks(
    load_seed_app: Loader,
) -> None:
    load_seed_app("mbt_inject_bare")  # install() has run in this process
    seen: list[Any] = []
    ran: list[str] = []
    transport = httpx.ASGITransport(app=plain_app(seen, ran))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/signup", params={"email": "x@example.com"})
    assert response.json() == {"returned": None}
    assert [type(t) for t in seen] == [BackgroundTasks]
    assert ran == ["x@example.com"]
