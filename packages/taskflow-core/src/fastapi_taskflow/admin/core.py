"""``TaskAdmin``: the admin API, dashboard, event stream and metrics on one router."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI

from ..errors import TaskflowError
from ..manager import TaskManager
from .api import AdminRoute, api_routes
from .auth import BasicLogin
from .dashboard import dashboard_routes
from .metrics import AdminMetrics
from .schemas import ErrorBody

__all__ = ["AdminConfigError", "TaskAdmin"]

logger = logging.getLogger("fastapi_taskflow")


class AdminConfigError(TaskflowError, ValueError):
    """``TaskAdmin`` was given a bad path or auth."""


def _check_path(path: str) -> str:
    if not isinstance(path, str):
        raise AdminConfigError(f"TaskAdmin path must be a string such as '/tasks', got {path!r}")
    if not path.startswith("/") or path.endswith("/") or "//" in path or len(path) < 2:
        raise AdminConfigError(
            f"TaskAdmin path {path!r} must start with '/' and not end with one, for "
            "example '/tasks' or '/admin/tasks'"
        )
    return path


def _check_options(task_manager: object, title: object, display_args: object) -> None:
    if not isinstance(task_manager, TaskManager):
        raise AdminConfigError(
            f"TaskAdmin needs the app's TaskManager as its second argument "
            f"(TaskAdmin(app, task_manager)), got {type(task_manager).__name__}"
        )
    if not isinstance(title, str):
        raise AdminConfigError(f"TaskAdmin title must be a string, got {title!r}")
    if not isinstance(display_args, bool):
        # "false" read from an environment variable is true: it would show arguments
        raise AdminConfigError(
            f"TaskAdmin display_args must be True or False, got {display_args!r}"
        )


class TaskAdmin:
    """The admin API, the live dashboard, the event stream and metrics for a TaskManager.

    ``TaskAdmin(app, task_manager)`` mounts everything under ``path``; the routes are
    on :attr:`router`, an ``APIRouter`` that can also be included on its own
    (``TaskAdmin(None, task_manager).router``).

    Args:
        app: the FastAPI app to mount on (None: only build :attr:`router`).
        task_manager: the manager whose tasks are shown.
        path: where the admin lives (``/tasks`` gives ``/tasks/dashboard``,
            ``/tasks/api/...``, ``/tasks/metrics``).
        auth: guards every admin route (API, dashboard, event stream, metrics). Either
            any FastAPI dependency (a callable usable in ``Depends``) that raises
            ``HTTPException`` to refuse, or a :class:`BasicLogin` for the built-in login
            page. None: no guard, and a warning is logged, because task arguments and
            errors are then readable by anyone who reaches the app.
        title: the dashboard's and login page's title.
        display_args: include task arguments and results in the task detail (off by
            default: they may hold personal data or secrets).

    Raises:
        AdminConfigError: a malformed ``path`` or an ``auth`` that is not callable.
    """

    def __init__(
        self,
        app: FastAPI | None,
        task_manager: TaskManager,
        *,
        path: str = "/tasks",
        auth: Callable[..., Any] | BasicLogin | None = None,
        title: str = "taskflow",
        display_args: bool = False,
    ) -> None:
        # Plain names on the right: the API reference shows these values, and must not
        # show private names.
        path = _check_path(path)
        _check_options(task_manager, title, display_args)
        self.path = path
        self.task_manager = task_manager
        self.title = title
        self.display_args = display_args
        self.auth = auth
        if auth is not None and not callable(auth):
            raise AdminConfigError(
                f"TaskAdmin auth must be a FastAPI dependency (a callable) or BasicLogin, "
                f"got {type(auth).__name__}"
            )
        self.metrics = AdminMetrics()
        task_manager.observers.add(self.metrics)
        router = self._build_router()
        self.router = router
        if auth is None:
            logger.warning(
                "TaskAdmin at %s has no auth: anyone who can reach this app can read task "
                "data and retry, cancel or purge tasks. Pass auth=BasicLogin(...) or a "
                "FastAPI dependency.",
                self.path,
            )
        if app is not None:
            app.include_router(self.router)

    def _build_router(self) -> APIRouter:
        router = APIRouter(prefix=self.path, tags=["taskflow admin"])
        guard_deps = [Depends(self.auth)] if self.auth is not None else []
        guard_responses: dict[int | str, dict[str, Any]] = {}
        if self.auth is not None:
            guard_responses = {
                401: {"model": ErrorBody, "description": "Not signed in"},
                403: {"model": ErrorBody, "description": "Not allowed"},
            }
        guarded = APIRouter(
            dependencies=guard_deps, responses=guard_responses, route_class=AdminRoute
        )
        api_routes(guarded, self.task_manager, display_args=self.display_args, metrics=self.metrics)
        dashboard_routes(guarded, title=self.title)
        router.include_router(guarded)
        if isinstance(self.auth, BasicLogin):
            open_routes = APIRouter(route_class=AdminRoute)
            self.auth.routes(open_routes, path=self.path, title=self.title)
            router.include_router(open_routes)
            self.auth.watch(guarded, open_routes)
        return router
