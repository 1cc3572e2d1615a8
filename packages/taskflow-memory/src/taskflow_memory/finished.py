"""The order in which kept tasks finished: what the memory backend's cap drops first."""

from __future__ import annotations

from collections import deque

__all__ = ["CHECK_EVERY", "FinishedOrder"]

CHECK_EVERY = 1024
"""How many finishes apart the queue is checked for places to drop."""


class FinishedOrder:
    """The ids of the finished tasks a memory backend keeps, oldest finish first.

    A dict used as an ordered set would say the same, but taking its first key scans
    every slot its earlier first keys left empty until the dict next resizes: ~1.8 µs
    per finished task once a store is at its cap, where every finish drops the oldest.
    Here the ids wait in a queue in the order they finished, each with the mark of that
    finish, and a dict holds each id's current mark: an id that moved out of a terminal
    status, or was deleted, has no mark, and one that finished again has a newer mark,
    so its older place in the queue is skipped when it reaches the front. The queue is
    rebuilt from the current places when skipped ones would outnumber them, so a store
    whose tasks are purged before the cap is reached does not grow it.

    Every value held is a string or an integer: nothing for the garbage collector to
    walk per task.
    """

    __slots__ = ("_ids", "_marks", "_next_mark", "_of")

    def __init__(self) -> None:
        self._ids: deque[str] = deque()
        self._marks: deque[int] = deque()
        """The mark of each place in ``_ids``, in step with it."""
        self._of: dict[str, int] = {}
        """Finished id -> the mark of its current place."""
        self._next_mark = 0

    def __len__(self) -> int:
        return len(self._of)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._of

    def add(self, task_id: str) -> None:
        """``task_id`` finished now: it becomes the newest (its older place is dropped)."""
        mark = self._next_mark
        self._next_mark = mark + 1
        self._of[task_id] = mark
        self._ids.append(task_id)
        self._marks.append(mark)
        # Only adds lengthen the queue: checking every CHECK_EVERY-th keeps the queue
        # within twice the ids finished plus 2 * CHECK_EVERY places.
        if not mark % CHECK_EVERY and len(self._ids) > 2 * len(self._of) + CHECK_EVERY:
            self._compact()

    def discard(self, task_id: str) -> None:
        """``task_id`` is no longer finished (it will run again) or no longer kept."""
        self._of.pop(task_id, None)

    def oldest(self) -> str | None:
        """The id that finished longest ago, or None when none is finished."""
        ids, marks, of = self._ids, self._marks, self._of
        while ids:
            task_id = ids[0]
            if of.get(task_id) == marks[0]:
                return task_id
            ids.popleft()  # a place the id no longer holds
            marks.popleft()
        return None

    def _compact(self) -> None:
        of = self._of
        kept = [(i, m) for i, m in zip(self._ids, self._marks, strict=True) if of.get(i) == m]
        self._ids = deque(i for i, _ in kept)
        self._marks = deque(m for _, m in kept)
