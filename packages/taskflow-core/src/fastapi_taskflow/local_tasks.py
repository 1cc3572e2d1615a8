"""The in-process state of the tasks this instance accepted: one owner for all of it.

A task accepted here has, until it finishes or leaves this instance, an
:class:`~fastapi_taskflow.invocation.Invocation` (its function and arguments), and, when
it goes through a queue, a place in that queue's count of waiting tasks (which
``QueueConfig.max_size`` limits) and a mark saying whether it was put on its queue with
its record. :class:`LocalTasks` holds all three, and :meth:`LocalTasks.forget` drops all
of them at once, whatever the reason the task leaves (it finished, was cancelled, was
refused by the store, or its request was not acknowledged).

What is bound to one event loop (the asyncio task running an attempt, a queue worker's
slots) lives in ``runtime.Runtime``; records not yet written live in the write buffer
(``pending``).
"""

from __future__ import annotations

from collections.abc import Iterable

from .invocation import Invocation

__all__ = ["LocalTasks"]


class LocalTasks:
    """The invocations, queue places and enqueue marks of this instance's tasks."""

    __slots__ = ("_enqueued", "_invocations", "_waiting")

    def __init__(self) -> None:
        self._invocations: dict[str, Invocation] = {}
        self._waiting: dict[str, set[str]] = {}
        self._enqueued: set[str] = set()

    def add(self, task_id: str, invocation: Invocation) -> None:
        """Hold the invocation of a task accepted here."""
        self._invocations[task_id] = invocation

    def get(self, task_id: str) -> Invocation | None:
        """The invocation of ``task_id`` if it is to run here, else None."""
        return self._invocations.get(task_id)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._invocations

    def __len__(self) -> int:
        return len(self._invocations)

    def wait_in_queue(self, task_id: str, queue: str) -> None:
        """Count ``task_id`` as waiting on ``queue`` until it is claimed or forgotten."""
        self._waiting.setdefault(queue, set()).add(task_id)

    def waiting_in(self, queue: str) -> int:
        """How many tasks accepted here wait on ``queue``."""
        return len(self._waiting.get(queue, ()))

    def left_queue(self, task_id: str, queue: str) -> None:
        """``task_id`` was claimed off ``queue``: it no longer counts as waiting."""
        waiting = self._waiting.get(queue)
        if waiting:
            waiting.discard(task_id)

    def mark_enqueued(self, task_ids: Iterable[str]) -> None:
        """These tasks were put on their queues with their records."""
        self._enqueued.update(task_ids)

    def take_enqueued(self, task_id: str) -> bool:
        """True (once) if ``task_id`` was put on its queue with its record."""
        if task_id in self._enqueued:
            self._enqueued.discard(task_id)
            return True
        return False

    def forget(self, task_id: str) -> None:
        """Drop everything held for ``task_id`` (a queue place exists only with an
        invocation: ``wait_in_queue`` follows ``add``)."""
        invocation = self._invocations.pop(task_id, None)
        self._enqueued.discard(task_id)
        if invocation is not None:
            self.left_queue(task_id, invocation.queue)
