"""The admin API, live dashboard, event stream and Prometheus metrics.

``TaskAdmin(app, task_manager, auth=BasicLogin(...))`` mounts everything under
``/tasks``; see the "Admin API" and "Metrics" pages of the docs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .auth import SESSION_COOKIE, AdminAuthError, BasicLogin
    from .core import AdminConfigError, TaskAdmin
else:  # imported on first use: the command line uses ``schemas`` without FastAPI
    from ..lazy_exports import lazy_exports

    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "SESSION_COOKIE": ".auth",
            "AdminAuthError": ".auth",
            "BasicLogin": ".auth",
            "AdminConfigError": ".core",
            "TaskAdmin": ".core",
        },
    )

__all__ = ["SESSION_COOKIE", "AdminAuthError", "AdminConfigError", "BasicLogin", "TaskAdmin"]
