"""Wiring a TaskManager into a FastAPI app: ``install(app)``.

``install()`` does three things, all scoped to that app:

1. adds :class:`TaskflowMiddleware`, which marks each request as belonging to the
   manager and writes the request's accepted tasks to the store before the response
   starts;
2. makes route parameters annotated ``BackgroundTasks`` or ``ManagedBackgroundTasks``
   receive a ``ManagedBackgroundTasks`` of this manager. FastAPI builds that object
   itself; taskflow replaces the class FastAPI instantiates with a factory that asks the
   current request's middleware which manager (if any) it belongs to, so apps without
   ``install()`` — or installed with another manager — are unaffected;
3. wraps the app's lifespan so the engine starts with the app and shuts down gracefully.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from fastapi import BackgroundTasks as FastAPIBackgroundTasks
from fastapi import FastAPI
from starlette.background import BackgroundTasks
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from .manager import TaskManager

__all__ = ["TaskflowMiddleware", "install_app"]

_current_manager: ContextVar[TaskManager | None] = ContextVar(
    "fastapi_taskflow_manager", default=None
)
_patch_lock = threading.Lock()
_patched = False


class TaskflowMiddleware:
    """ASGI middleware binding requests to a manager; added by ``install()``."""

    def __init__(self, app: ASGIApp, task_manager: TaskManager) -> None:
        self.app = app
        self.task_manager = task_manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        engine = self.task_manager._engine
        await engine.started()
        token = _current_manager.set(self.task_manager)

        async def send_after_flush(message: Message) -> None:
            if message["type"] == "http.response.start" and len(engine.pending):
                await engine.flush()
            await send(message)

        try:
            await self.app(scope, receive, send_after_flush)
        finally:
            _current_manager.reset(token)


def _background_tasks_factory(*args: Any, **kwargs: Any) -> BackgroundTasks:
    manager = _current_manager.get()
    if manager is None:
        return FastAPIBackgroundTasks(*args, **kwargs)
    from .background import ManagedBackgroundTasks

    return ManagedBackgroundTasks(manager)


def _patch_fastapi() -> None:
    global _patched
    with _patch_lock:
        if _patched:
            return
        import fastapi.dependencies.utils as dependency_utils

        setattr(dependency_utils, "BackgroundTasks", _background_tasks_factory)  # noqa: B010
        _patched = True


def install_app(task_manager: TaskManager, app: FastAPI) -> None:
    """Install ``task_manager`` into ``app`` (see the module docstring)."""
    if getattr(app.state, "taskflow_manager", None) is not None:
        if app.state.taskflow_manager is task_manager:
            return
        raise RuntimeError("this app already has a different TaskManager installed")
    _patch_fastapi()
    app.state.taskflow_manager = task_manager
    app.add_middleware(TaskflowMiddleware, task_manager=task_manager)
    original: Callable[[Any], AbstractAsyncContextManager[Any]] = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[Any]:
        async with task_manager, original(app_) as state:
            yield state

    app.router.lifespan_context = lifespan
