"""fastapi_taskflow: managed background tasks for FastAPI.

``BackgroundTasks``, upgraded in place: ``add_task()`` returns a task id, and tasks get
retries with backoff, status tracking, idempotency keys, tags, a task context and
structured logs, priorities and named queues, on an in-process or shared backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import QueueConfig, TaskConfig
from .context import TaskContext, get_task_context, task_log
from .errors import (
    AppInstallError,
    BackendNotFoundError,
    BackendNotOpenError,
    BackendUnavailableError,
    BackendURLError,
    EagerDispatchError,
    IdempotencyKeyHeldError,
    InvalidOperationError,
    InvalidTaskError,
    QueueFullError,
    RetryQueueFullError,
    ScheduleError,
    TaskArgumentError,
    TaskCancelledError,
    TaskflowError,
    TaskNotFoundError,
    TaskStateError,
    TaskStoreRefusedError,
    TaskTimeoutError,
)
from .events import LifecycleEvent, LogEvent
from .models import LogEntry, TaskPage, TaskQuery, TaskRecord, TaskStats, TaskStatus
from .observers import (
    BaseObserver,
    FileObserver,
    LoggingObserver,
    MemoryObserver,
    StdoutObserver,
)
from .one_off import ScheduledTask
from .progress import task_progress

if TYPE_CHECKING:
    from .background import ManagedBackgroundTasks
    from .manager import TaskManager
else:  # imported on first use: the command line never needs FastAPI
    from .lazy_exports import lazy_exports

    __getattr__, __dir__ = lazy_exports(
        __name__, {"ManagedBackgroundTasks": ".background", "TaskManager": ".manager"}
    )

__version__ = "0.1.0"

__all__ = [
    "AppInstallError",
    "BackendNotFoundError",
    "BackendNotOpenError",
    "BackendURLError",
    "BackendUnavailableError",
    "BaseObserver",
    "EagerDispatchError",
    "FileObserver",
    "IdempotencyKeyHeldError",
    "InvalidOperationError",
    "InvalidTaskError",
    "LifecycleEvent",
    "LogEntry",
    "LogEvent",
    "LoggingObserver",
    "ManagedBackgroundTasks",
    "MemoryObserver",
    "QueueConfig",
    "QueueFullError",
    "RetryQueueFullError",
    "ScheduleError",
    "ScheduledTask",
    "StdoutObserver",
    "TaskArgumentError",
    "TaskCancelledError",
    "TaskStoreRefusedError",
    "TaskConfig",
    "TaskContext",
    "TaskManager",
    "TaskNotFoundError",
    "TaskPage",
    "TaskQuery",
    "TaskRecord",
    "TaskStateError",
    "TaskStats",
    "TaskStatus",
    "TaskTimeoutError",
    "TaskflowError",
    "get_task_context",
    "task_log",
    "task_progress",
]
