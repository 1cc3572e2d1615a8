"""The errors taskflow raises.

Every public error subclasses :class:`TaskflowError`, so ``except TaskflowError`` catches
everything taskflow raises on purpose. Each message says what to do about it.
"""

from __future__ import annotations

__all__ = [
    "BackendNotFoundError",
    "BackendUnavailableError",
    "BackendURLError",
    "EagerDispatchError",
    "InvalidTaskError",
    "QueueFullError",
    "ScheduleError",
    "TaskArgumentError",
    "TaskCancelledError",
    "TaskNotFoundError",
    "TaskStateError",
    "TaskTimeoutError",
    "TaskflowError",
]


class TaskflowError(Exception):
    """Root of every error taskflow raises on purpose."""


class InvalidTaskError(TaskflowError, ValueError):
    """A task definition or an ``add_task()`` call was given bad input.

    Raised for a non-callable task, negative retries or delay, a backoff below 1,
    tags that are not ``dict[str, str]``, a non-integer priority, or a bad queue setting.
    """


class TaskArgumentError(InvalidTaskError):
    """An argument of a task cannot be stored as JSON.

    Durable backends store arguments as JSON so another instance can run the task. The
    message names the argument; pass plain data (str, int, pydantic models, datetimes,
    UUIDs, enums, lists and dicts of those) or an id the task can load itself.
    """


class BackendURLError(TaskflowError, ValueError):
    """A backend URL is malformed (for example it has no ``scheme://``)."""


class BackendNotFoundError(TaskflowError, LookupError):
    """No installed package provides a backend for this URL scheme.

    The message names the package to install, for example ``pip install "taskflow-core[redis]"``.
    """


class BackendUnavailableError(TaskflowError, ConnectionError):
    """The backend's server could not be reached.

    A route can turn this into a 503: nothing was accepted, so nothing is lost.
    """


class QueueFullError(TaskflowError):
    """A named queue already holds ``max_size`` waiting tasks.

    The task was recorded as ``REJECTED`` and will not run. Retry later, or raise the
    queue's ``QueueConfig(max_size=...)``.
    """

    def __init__(self, queue: str, max_size: int, task_id: str) -> None:
        self.queue = queue
        self.max_size = max_size
        self.task_id = task_id
        super().__init__(
            f"queue {queue!r} is full ({max_size} tasks waiting); task {task_id} was "
            f"REJECTED. Retry later or raise QueueConfig(max_size=...) for {queue!r}."
        )


class EagerDispatchError(TaskflowError, RuntimeError):
    """A task was to start now but no event loop is running to start it on.

    ``eager=True`` needs the application's event loop: call ``add_task()`` from a route
    or from code running under ``async with task_manager``, or drop ``eager=True``.
    (Queued tasks — ``priority=``, named queues — never need one: they wait until the
    manager starts.)
    """


class TaskNotFoundError(TaskflowError):
    """No task has the given id (it never existed, or was purged).

    Check the id: it is the one ``add_task()`` (or ``schedule_once()``) returned.
    """


class TaskStateError(TaskflowError):
    """The task is not in a status that allows the operation.

    For example cancelling a task that already finished (SUCCESS, FAILED, ...): a
    finished task cannot be cancelled; read its record to see how it ended.
    """


class TaskTimeoutError(TaskflowError):
    """An attempt of a task ran longer than its ``timeout``.

    The attempt counts as failed (it is retried if retries remain). An async task was
    cancelled at its deadline; a sync one cannot be stopped from outside, so it was
    reported timed out and its late result is discarded. Raise the task's ``timeout=``
    or make the work shorter.
    """

    def __init__(self, timeout: float, *, sync: bool = False) -> None:
        self.timeout = timeout
        what = (
            "the sync function keeps its thread until it returns; its late result is discarded"
            if sync
            else "it was cancelled"
        )
        super().__init__(
            f"the attempt ran longer than its timeout of {timeout:g}s ({what}); raise "
            "timeout= on the task or make the work shorter"
        )


class TaskCancelledError(TaskflowError):
    """The task was cancelled with ``task_manager.cancel()``.

    Inside a task, ``get_task_context().raise_if_cancelled()`` raises it once a
    cancellation was requested (a sync task's way to stop itself); raising it ends the
    task as ``CANCELLED``, which is final and never retried.
    """


class ScheduleError(InvalidTaskError):
    """A schedule was given bad settings (``every=``/``cron=``, ``run_at=``/``delay=``,
    ``timezone=``), or ``cron=`` was used without the cron parser installed
    (``pip install "taskflow-core[cron]"``)."""
