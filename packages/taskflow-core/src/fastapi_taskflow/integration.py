"""Wiring a TaskManager into a FastAPI app: ``install(app)``.

``install()`` does three things, all scoped to that app:

1. adds :class:`TaskflowMiddleware`, which marks each request as belonging to the
   manager and writes the request's accepted tasks to the store before the response
   starts (so a 2xx carrying a task id means the task is durable; a request whose tasks
   cannot be written is answered 503 instead, see the class);
2. makes route parameters annotated ``BackgroundTasks`` or ``ManagedBackgroundTasks``
   receive a ``ManagedBackgroundTasks`` of this manager. FastAPI builds that object
   itself; taskflow replaces the class FastAPI instantiates with a factory that asks the
   current request's middleware which manager (if any) it belongs to, so apps without
   ``install()`` — or installed with another manager — are unaffected;
3. wraps the app's lifespan so the engine starts with the app and shuts down gracefully.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

import fastapi.dependencies.utils as _dependency_utils
from fastapi import BackgroundTasks as FastAPIBackgroundTasks
from fastapi import FastAPI
from starlette.background import BackgroundTasks
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .accept import request_tasks
from .background import ManagedBackgroundTasks
from .errors import AppInstallError, BackendUnavailableError, TaskStoreRefusedError
from .invocation import BACKGROUND
from .redaction import mask_secrets

if TYPE_CHECKING:
    from .engine import Engine
    from .manager import TaskManager

__all__ = ["TaskflowMiddleware", "install_app"]

logger = logging.getLogger("fastapi_taskflow")
_patch_lock = threading.Lock()


class _RequestTasks(set[str]):
    """The ids of the tasks one request accepted (what ``accept.request_tasks`` holds
    during the request), with the manager serving the request: one context variable
    for both, set once per request."""

    __slots__ = ("task_manager",)

    task_manager: TaskManager


class TaskflowMiddleware:
    """ASGI middleware binding requests to a manager; added by ``install()``.

    It tracks the ids of the tasks accepted during each request and, when the response
    starts, writes those still in the write buffer to the store. A response therefore
    never acknowledges a task that is not stored:

    * if that write fails, the app's response is replaced by a 503 JSON answer
      (``{"detail": ...}``, ``Retry-After: 1``; a 500 for an error other than an
      unreachable store) and the request's unwritten tasks are dropped: never stored,
      never run. The client may retry; an idempotency key makes the retry safe;
    * if ``add_task()`` raised ``BackendUnavailableError`` (the store is known to be
      down, for example since startup) and the app did not handle it, the answer is
      the same 503;
    * if the app answers 5xx, or raises, its request's unwritten tasks are dropped too:
      an error response acknowledges nothing.

    Tasks already written (by an earlier write of the buffer, or a keyed ``add_task()``,
    which writes at once) stay accepted and run whatever the response: the stored
    background tasks the response did not run are started here once it is sent — those
    of a failed request, of an answer made from an ``HTTPException`` (FastAPI gives the
    route's background tasks only to a response the route returns), and of a response
    returned with a ``background`` of its own.
    """

    def __init__(self, app: ASGIApp, task_manager: TaskManager) -> None:
        self.app = app
        self.task_manager = task_manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if getattr(_dependency_utils, "BackgroundTasks", None) is not _background_tasks_factory:
            _patch_fastapi()  # something removed the hook: put it back
        engine = self.task_manager._engine
        runtime = engine.current_runtime
        if runtime is None or not runtime.is_current():
            await engine.started()
        accepted = _RequestTasks()
        accepted.task_manager = self.task_manager
        buffered = engine.create_now is None  # an in-process store takes tasks at once
        ids_token = request_tasks.set(accepted)
        refused = False
        started = False

        async def send_after_flush(message: Message) -> None:
            nonlocal refused, started
            if refused:
                return  # the app's response was replaced: swallow the rest of it
            if message["type"] == "http.response.start":
                started = True
                if int(message.get("status", 200)) >= 500:
                    _drop_unwritten(engine, accepted)
                elif buffered and any(task_id in engine.pending for task_id in accepted):
                    try:
                        await engine.flush()
                    except Exception as exc:
                        if _drop_unwritten(engine, accepted):
                            refused = True
                            await _send_refusal(send, exc)
                            return
                        # a concurrent write stored this request's tasks: go on
                    errors = [e for t in accepted if (e := engine.refused.pop(t)) is not None]
                    if errors:
                        _drop_unwritten(engine, accepted)
                        refused = True
                        await _send_refusal(send, TaskStoreRefusedError(errors[0]))
                        return
            await send(message)

        try:
            await self.app(scope, receive, send_after_flush)
        except BackendUnavailableError as exc:
            # add_task() refused a task (store unreachable) and the app did not handle
            # it: the same 503 as a failed write, since nothing of this request is
            # acknowledged
            if started:
                raise
            _drop_unwritten(engine, accepted)
            await _send_refusal(send, exc, about_tasks=bool(accepted) or exc.task_refused)
        except BaseException:
            if not started:
                _drop_unwritten(engine, accepted)
            raise
        finally:
            request_tasks.reset(ids_token)
            if accepted and not refused:
                _run_stored_background_tasks(engine, accepted)


def _drop_unwritten(engine: Engine, task_ids: set[str]) -> list[str]:
    """Forget the tasks of ``task_ids`` not yet written to the store; return them.

    They leave the write buffer, the in-process invocations and the queues' waiting sets.
    """
    dropped = engine.pending.discard(task_ids)
    for task_id in dropped:
        engine.forget(task_id)
    if dropped:
        logger.warning(
            "%d task(s) of a request were not acknowledged and are dropped", len(dropped)
        )
    return dropped


def _run_stored_background_tasks(engine: Engine, task_ids: set[str]) -> None:
    """Start the stored background tasks of a request that its response did not run
    (running one twice is a no-op: its PENDING → RUNNING compare-and-set admits one
    executor). Those the response ran are finished and forgotten, or, when one waits
    for a later retry, left to its queue; unwritten ones were dropped."""
    for task_id in task_ids:
        invocation = engine.tasks.get(task_id)  # None once finished: the common case
        if invocation is not None and invocation.route == BACKGROUND and not invocation.attempts:
            engine.spawn_on(asyncio.get_running_loop(), engine.run_now(task_id))


async def _send_refusal(send: Send, exc: BaseException, *, about_tasks: bool = True) -> None:
    """Answer a request whose tasks could not be stored: 503 (store unreachable) or 500.

    ``about_tasks=False``: the request added no task (a read of the store failed), so
    the answer says only that the store is unavailable. The body never says where the
    store is or what it answered (that can name internal hosts); the cause is logged for
    the operator instead, its passwords masked.
    """
    unavailable = isinstance(exc, BackendUnavailableError)
    logger.warning(
        "%s, answering %d: %s",
        "a request's tasks could not be stored" if about_tasks else "the task store is unreachable",
        503 if unavailable else 500,
        mask_secrets(f"{type(exc).__name__}: {exc}"),
    )
    if unavailable and not about_tasks:
        detail = "the task store is unavailable; retry later"
    elif unavailable:
        detail = "the task store is unavailable, so no task was accepted; retry later"
    elif isinstance(exc, TaskStoreRefusedError):
        detail = "the task store refused a task of this request (the server log says why)"
    else:
        detail = "the request's tasks could not be stored, so none was accepted"
    response = JSONResponse(
        {"detail": detail},
        status_code=503 if unavailable else 500,
        headers={"Retry-After": "1"} if unavailable else None,
    )
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": response.body})


def _background_tasks_factory(*args: Any, **kwargs: Any) -> BackgroundTasks:
    accepted = request_tasks.get()
    if type(accepted) is _RequestTasks:  # a request of an app install()ed with a manager
        return ManagedBackgroundTasks(accepted.task_manager)
    return FastAPIBackgroundTasks(*args, **kwargs)


def _patch_fastapi() -> None:
    """Make FastAPI build ``BackgroundTasks`` through our factory.

    The hook itself is checked on every call (not a flag remembered once): if anything
    restored FastAPI's original class since (a test fixture undoing monkeypatches,
    another library), it is put back.
    """
    if getattr(_dependency_utils, "BackgroundTasks", None) is _background_tasks_factory:
        return
    with _patch_lock:
        setattr(_dependency_utils, "BackgroundTasks", _background_tasks_factory)  # noqa: B010


def install_app(task_manager: TaskManager, app: FastAPI) -> None:
    """Install ``task_manager`` into ``app`` (see the module docstring)."""
    if getattr(app.state, "taskflow_manager", None) is not None:
        if app.state.taskflow_manager is task_manager:
            return
        raise AppInstallError(
            "this app already has a different TaskManager installed: one app is served by "
            "one manager. Install the one it has (app.state.taskflow_manager) or give "
            "this manager an app of its own."
        )
    _patch_fastapi()
    app.state.taskflow_manager = task_manager
    app.add_middleware(TaskflowMiddleware, task_manager=task_manager)
    original: Callable[[Any], AbstractAsyncContextManager[Any]] = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[Any]:
        async with task_manager, original(app_) as state:
            yield state

    app.router.lifespan_context = lifespan
