"""The admin API, live dashboard, event stream and Prometheus metrics.

``TaskAdmin(app, task_manager, auth=BasicLogin(...))`` mounts everything under
``/tasks``; see the "Admin API" and "Metrics" pages of the docs.
"""

from __future__ import annotations

from .auth import SESSION_COOKIE, AdminAuthError, BasicLogin
from .core import AdminConfigError, TaskAdmin

__all__ = ["SESSION_COOKIE", "AdminAuthError", "AdminConfigError", "BasicLogin", "TaskAdmin"]
