"""The in-process state of the tasks this instance accepted: one owner for all of it.

A task accepted here has, until it finishes or leaves this instance, an
:class:`~fastapi_taskflow.invocation.Invocation` (its function and arguments), and, when
it goes through a queue, a place in that queue's count of waiting tasks (which
``QueueConfig.max_size`` limits), a mark saying whether it was put on its queue with
its record, and a mark saying that this instance has put it on its queue and has not
claimed it since (so only a queue holds it: see ``lost_claims``). :class:`LocalTasks`
holds all of them, and :meth:`LocalTasks.forget` drops them at once, whatever the
reason the task leaves (it finished, was cancelled, was refused by the store, or its
request was not acknowledged).

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

    __slots__ = ("_enqueued", "_invocations", "_on_queue", "_waiting")

    def __init__(self) -> None:
        self._invocations: dict[str, Invocation] = {}
        self._waiting: dict[str, dict[str, None]] = {}  # queue -> ids, in order
        self._enqueued: set[str] = set()
        self._on_queue: set[str] = set()

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
        self._waiting.setdefault(queue, {})[task_id] = None

    def waiting_in(self, queue: str) -> int:
        """How many tasks accepted here wait on ``queue``."""
        return len(self._waiting.get(queue, ()))

    def waiting_ids(self) -> list[str]:
        """The ids of the tasks accepted here that wait on a queue, in each queue's
        order of acceptance."""
        return [task_id for waiting in self._waiting.values() for task_id in waiting]

    def put_on_queue(self, task_id: str) -> None:
        """This instance has put ``task_id`` (accepted here) on its queue: from now on
        the queue holds it, until this instance claims it (:meth:`left_queue`)."""
        if task_id in self._invocations:
            self._on_queue.add(task_id)

    def held_here(self, task_id: str) -> bool:
        """True when ``task_id`` was accepted here and is not left to a queue: a
        container (background list, eager start) is to run it, or it is on its way to
        its queue (not put there yet)."""
        return task_id in self._invocations and task_id not in self._on_queue

    def left_queue(self, task_id: str, queue: str) -> None:
        """``task_id`` was claimed off ``queue``: it no longer counts as waiting."""
        self._on_queue.discard(task_id)
        waiting = self._waiting.get(queue)
        if waiting:
            waiting.pop(task_id, None)

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
        if self._enqueued:
            self._enqueued.discard(task_id)
        if self._on_queue:
            self._on_queue.discard(task_id)
        if invocation is not None and self._waiting:
            self.left_queue(task_id, invocation.queue)
