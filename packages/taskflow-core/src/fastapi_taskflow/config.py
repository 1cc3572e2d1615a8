"""Per-task and per-queue settings, validated where they are given."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from .errors import InvalidTaskError
from .limits import check_name, check_priority_range, check_tags_size

__all__ = [
    "DEFAULT_QUEUE",
    "RETRY_WAIT_MAX",
    "QueueConfig",
    "TaskConfig",
    "check_priority",
    "check_tags",
]

DEFAULT_QUEUE = "default"
"""The queue a task uses when it names none."""


RETRY_WAIT_MAX = 365 * 24 * 3600.0
"""The longest wait before a retry, in seconds (a year), whatever ``delay``, ``backoff``
and ``max_delay`` say: a wait ``backoff`` grows without a ``max_delay`` would
otherwise pass what a date can hold."""


@dataclass(frozen=True)
class TaskConfig:
    """How a registered task runs; built by ``@task_manager.task(...)``.

    Attributes:
        name: the task's registered name (defaults to the function's qualified name); a
            recovering instance finds the function by this name.
        retries: how many times a failed attempt is retried (0: run once).
        delay: seconds before the first retry.
        backoff: multiplier applied to ``delay`` for each further retry (1: constant).
        eager: start as soon as ``add_task()`` is called instead of after the response.
        priority: route through the priority queue with this priority (higher first).
        queue: the named queue to run on; None means the default queue when queued.
        requeue_on_interrupt: run the task again (at least once) when the instance running
            it dies, instead of marking it ``INTERRUPTED``.
        timeout: seconds one attempt may run; longer is a failed attempt raising
            ``TaskTimeoutError`` (None: no limit). See ``timeouts``.
        retry_on: the exception classes a failed attempt is retried for (an instance
            of one of them); any other failure ends the task FAILED at once. None: every
            failure is retried.
        max_delay: the longest wait between attempts, in seconds, however many retries
            ``backoff`` has grown the delay over (None: no cap).
        jitter: the share of each wait left to chance, from 0 (none) to 1: each wait is
            drawn between ``(1 - jitter)`` times the computed wait and the computed wait.
    """

    name: str
    retries: int = 0
    delay: float = 0.0
    backoff: float = 1.0
    eager: bool = False
    priority: int | None = None
    queue: str | None = None
    requeue_on_interrupt: bool = False
    timeout: float | None = None
    retry_on: tuple[type[BaseException], ...] | None = None
    max_delay: float | None = None
    jitter: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "retry_on", _exception_classes(self.retry_on))
        if not _is_number(self.jitter) or not 0 <= self.jitter <= 1:
            raise InvalidTaskError(
                f"jitter must be a number from 0 to 1, got {self.jitter!r}; e.g. jitter=1 "
                "to draw each wait between 0 and the computed one, 0 for exact waits"
            )
        if self.max_delay is not None and (not _is_number(self.max_delay) or self.max_delay <= 0):
            raise InvalidTaskError(
                f"max_delay must be a number of seconds > 0 or None, got {self.max_delay!r}"
            )
        if self.timeout is not None and (not _is_number(self.timeout) or self.timeout <= 0):
            raise InvalidTaskError(
                f"timeout must be a number of seconds > 0 or None, got {self.timeout!r}"
            )
        if not isinstance(self.name, str) or not self.name:
            raise InvalidTaskError(f"task name must be a non-empty string, got {self.name!r}")
        check_name("task name", self.name)
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise InvalidTaskError(
                f"retries must be an integer >= 0, got {self.retries!r}; use retries=0 to "
                "run a task once"
            )
        if not _is_number(self.delay) or self.delay < 0:
            raise InvalidTaskError(f"delay must be a number of seconds >= 0, got {self.delay!r}")
        if not _is_number(self.backoff) or self.backoff < 1:
            raise InvalidTaskError(
                f"backoff must be a number >= 1, got {self.backoff!r}; use backoff=1 for a "
                "constant delay, 2 to double it on every retry"
            )
        if not isinstance(self.eager, bool):
            raise InvalidTaskError(f"eager must be True or False, got {self.eager!r}")
        if not isinstance(self.requeue_on_interrupt, bool):
            raise InvalidTaskError(
                f"requeue_on_interrupt must be True or False, got {self.requeue_on_interrupt!r}"
            )
        check_priority(self.priority)
        if self.queue is not None and (not isinstance(self.queue, str) or not self.queue):
            raise InvalidTaskError(f"queue must be a non-empty string, got {self.queue!r}")
        if self.queue is not None:
            check_name("queue name", self.queue)

    def retry_delay(self, failed_attempts: int) -> float:
        """Seconds to wait before the next attempt after ``failed_attempts`` failures.

        ``delay * backoff ** (failed_attempts - 1)``, at most ``max_delay`` (and at most
        :data:`RETRY_WAIT_MAX` whatever the settings): the first retry waits ``delay``.
        With ``jitter``, a wait drawn at random between ``(1 - jitter)`` times that and
        that.
        """
        try:
            grown = float(self.delay) * float(self.backoff) ** max(failed_attempts - 1, 0)
        except OverflowError:  # grown past any float: the cap below applies
            grown = math.inf
        cap = RETRY_WAIT_MAX if self.max_delay is None else min(self.max_delay, RETRY_WAIT_MAX)
        wait = min(grown, float(cap))
        if self.jitter:
            wait -= wait * self.jitter * random.random()
        return wait

    def retries_for(self, exc: BaseException) -> bool:
        """True when a failed attempt that raised ``exc`` is one ``retry_on`` retries."""
        return self.retry_on is None or isinstance(exc, self.retry_on)


@dataclass(frozen=True)
class QueueConfig:
    """Limits of one named queue.

    Attributes:
        concurrency: how many of its tasks this instance runs at once.
        max_size: how many of its tasks may wait at once on this instance; further
            ``add_task()`` calls raise ``QueueFullError`` (None: unbounded).
    """

    concurrency: int = 10
    max_size: int | None = None

    def __post_init__(self) -> None:
        if _bad_int(self.concurrency) or self.concurrency < 1:
            raise InvalidTaskError(
                f"QueueConfig.concurrency must be an integer >= 1, got {self.concurrency!r}"
            )
        if self.max_size is not None and (_bad_int(self.max_size) or self.max_size < 1):
            raise InvalidTaskError(
                f"QueueConfig.max_size must be an integer >= 1 or None, got {self.max_size!r}"
            )


def _exception_classes(value: Any) -> tuple[type[BaseException], ...] | None:
    """``retry_on`` as a tuple of exception classes (one class is a tuple of one), or
    ``InvalidTaskError`` naming what is wrong."""
    if value is None:
        return None
    classes = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not classes or not all(
        isinstance(cls, type) and issubclass(cls, BaseException) for cls in classes
    ):
        raise InvalidTaskError(
            "retry_on must be an exception class or a tuple of them, for example "
            f"retry_on=(ConnectionError, TimeoutError), got {value!r}"
        )
    return classes


def check_priority(priority: Any) -> None:
    """Raise ``InvalidTaskError`` unless ``priority`` is None or an integer (not a bool)
    within the range every store holds (see :mod:`fastapi_taskflow.limits`)."""
    if priority is not None and _bad_int(priority):
        raise InvalidTaskError(
            f"priority must be an integer (conventionally 1 lowest to 10 highest) or None, "
            f"got {priority!r}"
        )
    check_priority_range(priority)


RESERVED_TAG_PREFIX = "taskflow."
"""Tag names taskflow sets itself (``taskflow.schedule``, ``taskflow.run_at`` ...); a
task's own tags may not start with it: one would pass for a schedule's firing."""


def check_tags(tags: Any) -> dict[str, str]:
    """Return ``tags`` as a dict, or raise ``InvalidTaskError`` unless it is ``dict[str, str]``
    that every store can hold (see :mod:`fastapi_taskflow.limits`)."""
    if tags is None:
        return {}
    if not isinstance(tags, dict):
        raise InvalidTaskError(f"tags must be a dict[str, str], got {type(tags).__name__}")
    for key, value in tags.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidTaskError(
                f"tags must be a dict[str, str]; tag {key!r}: {value!r} is not. Convert "
                f"values with str(), e.g. tags={{{str(key)!r}: str(value)}}"
            )
        if key.startswith(RESERVED_TAG_PREFIX):
            raise InvalidTaskError(
                f"tag {key!r}: names starting with {RESERVED_TAG_PREFIX!r} are taskflow's "
                "own (a schedule's firings carry them); choose another name"
            )
    clean = dict(tags)
    check_tags_size(clean)
    return clean


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool): NaN and infinity are no number of seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _bad_int(value: Any) -> bool:
    return isinstance(value, bool) or not isinstance(value, int)
