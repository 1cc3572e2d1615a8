"""The errors taskflow raises.

Every public error subclasses :class:`TaskflowError`, so ``except TaskflowError`` catches
everything taskflow raises on purpose. Each message says what to do about it.
"""

from __future__ import annotations

__all__ = [
    "AppInstallError",
    "BackendNotFoundError",
    "BackendNotOpenError",
    "BackendURLError",
    "BackendUnavailableError",
    "EagerDispatchError",
    "IdempotencyKeyHeldError",
    "InvalidOperationError",
    "InvalidTaskError",
    "QueueFullError",
    "RetryQueueFullError",
    "ScheduleError",
    "TaskArgumentError",
    "TaskCancelledError",
    "TaskNotFoundError",
    "TaskStateError",
    "TaskStoreRefusedError",
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
    """An argument of a task cannot be stored as JSON without reading or changing it.

    Durable backends store arguments as JSON so another instance can run the task. Files,
    streams, uploads, generators and other iterators (which only turn into data by being
    read) and objects with no JSON form (locks, sockets) are refused; the argument is left
    untouched. The message names the argument; pass plain data (str, int, bytes, pydantic
    models, datetimes, UUIDs, enums, lists and dicts of those) or an id the task can load
    itself.
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
    ``task_refused`` is True when ``add_task()`` raised it (the store is known to be
    down, so the task was not accepted).
    """

    def __init__(self, *args: object, task_refused: bool = False) -> None:
        super().__init__(*args)
        self.task_refused = task_refused


class BackendNotOpenError(TaskflowError, RuntimeError):
    """A backend used directly was called before ``await backend.open()``, or opened
    again after ``close()``.

    ``TaskManager`` opens and closes its backend itself; code that uses a backend
    object on its own opens it first, and makes a new one (or ``backend.fork()``) after
    closing it.
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


class AppInstallError(TaskflowError, RuntimeError):
    """``task_manager.install(app)`` was called on an app another ``TaskManager`` serves.

    One app is served by one manager (its middleware, its ``BackgroundTasks`` and its
    lifespan): install the manager the app already has
    (``app.state.taskflow_manager``), or give this manager an app of its own.
    """


class TaskStoreRefusedError(TaskflowError):
    """The task store refused to record an accepted task.

    ``add_task()`` checks every documented limit first, so this means the store refused
    something those checks did not foresee (a column changed by hand, a store-specific
    limit). The refused task did not run and is stored as FAILED with the store's
    reason; other tasks are unaffected. ``install()``'s middleware answers the request
    that accepted it with a 500.
    """


class TaskNotFoundError(TaskflowError, LookupError):
    """No task has this id (it never existed, or it was purged).

    Check the id (``taskflow list`` or the admin API's task list shows the ids).
    """

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(
            f"no task has the id {task_id!r}; check the id (it may never have existed, or "
            "it was purged)"
        )


class TaskStateError(TaskflowError, ValueError):
    """An operation does not apply to a task in its current status.

    For example retrying a task that is still RUNNING, or cancelling one that already
    finished. ``status`` is the status the task was found in.
    """

    def __init__(self, task_id: str, status: str, message: str) -> None:
        self.task_id = task_id
        self.status = status
        super().__init__(message)


class IdempotencyKeyHeldError(TaskStateError):
    """A task could not take its idempotency key back: another task holds it now.

    Raised by ``Store.transition(..., take_key=True)`` (what an operator retry of a
    FAILED task uses) when, since the task released its key, a new task with the same
    key was accepted. Nothing was changed: the task keeps its status. ``key_holder`` is
    the id of the task that holds the key; ``task_id`` and ``status`` are the refused
    task's. The key itself is left out of the message (it is the application's data).
    """

    def __init__(self, task_id: str, status: str, key_holder: str) -> None:
        self.key_holder = key_holder
        super().__init__(
            task_id,
            status,
            f"task {task_id} cannot take its idempotency key back: task {key_holder} "
            f"holds it now, so task {task_id} was left {status.upper()}. Look at task "
            f"{key_holder} instead (it does the same work), or retry task {task_id} once "
            f"task {key_holder} has failed",
        )


class RetryQueueFullError(QueueFullError):
    """A retry stopped because the task's queue already holds its limit of waiting tasks.

    Nothing was rejected: the task keeps its status. ``retried`` lists the ids that were
    retried before the limit was reached (by ``retry_failed``); retry the rest later.
    """

    def __init__(self, queue: str, max_size: int, task_id: str, retried: list[str]) -> None:
        self.queue = queue
        self.max_size = max_size
        self.task_id = task_id
        self.retried = retried
        TaskflowError.__init__(
            self,
            f"queue {queue!r} is full ({max_size} tasks waiting): task {task_id} was not "
            f"retried and keeps its status ({len(retried)} retried before it). Retry again "
            "once the queue has drained.",
        )


class InvalidOperationError(TaskflowError, ValueError):
    """An operator action (retry, cancel, purge) was given a bad argument.

    For example a negative ``older_than`` for a purge; the message names the argument.
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
