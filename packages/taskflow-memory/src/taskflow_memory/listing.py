"""Reading the kept records newest first without sorting all of them.

A memory store keeps its records in a dict in the order they arrived, which is their
creation order except where a record arrived late (a task accepted on a thread, a
record handed over with an older ``created_at``). :class:`CreationOrder` measures how
late at most, so a walk from the newest arrival backwards knows when no record further
back can still belong to a page: a task list's first page reads about a page of
records, not every kept one. Nothing is measured when a task is created (that is the
engine's hot path); the next read folds in what arrived since the last one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from operator import attrgetter

from fastapi_taskflow.models import LiveRecord, TaskQuery, matches_text

__all__ = ["NEWEST_FIRST", "CreationOrder", "page_filter"]

NEWEST_FIRST = attrgetter("created_at", "task_id")
"""The sort key of a task list (``reverse=True``: newest first, ties by task id)."""

_NO_LAG = timedelta(0)


class CreationOrder:
    """How far the arrival order of a store's records strays from their creation
    order: the most by which a record's ``created_at`` is older than that of a record
    that arrived before it (zero while they arrive in creation order).

    Owned by the store's state; call :meth:`lag` under the store's lock.
    """

    __slots__ = ("_lag", "_last", "_newest")

    def __init__(self) -> None:
        self._last: LiveRecord | None = None
        """The newest arrival folded in so far."""
        self._newest: datetime | None = None
        """The latest ``created_at`` among the records folded in."""
        self._lag = _NO_LAG

    def lag(self, records: dict[str, LiveRecord]) -> timedelta:
        """The lag of ``records`` (a store's records, in arrival order), after folding
        in the records that arrived since the last call.

        A record that was folded in and is gone (trimmed or purged) may have raised the
        lag; what remains is measured again from the start when the last one is gone.
        """
        last = self._last
        if last is not None and records.get(last.task_id) is not last:
            last = self._last = self._newest = None  # measured again from the oldest
            self._lag = _NO_LAG
        arrived: list[datetime] = []
        for record in reversed(records.values()):
            if record is last:
                break
            arrived.append(record.created_at)
        if not arrived:
            return self._lag
        newest, lag = self._newest, self._lag
        for created in reversed(arrived):  # in arrival order
            if newest is None or created >= newest:
                newest = created
            elif newest - created > lag:
                lag = newest - created
        self._last = records[next(reversed(records))]
        self._newest, self._lag = newest, lag
        return lag


def page_filter(query: TaskQuery) -> Callable[[LiveRecord], bool] | None:
    """The test a record passes to match ``query``'s filters (not its cursor); None
    when ``query`` filters nothing."""
    checks: list[Callable[[LiveRecord], bool]] = []
    if query.statuses:
        statuses = frozenset(query.statuses)
        checks.append(lambda r: r.status in statuses)
    func_name, queue = query.func_name, query.queue
    if func_name is not None:
        checks.append(lambda r: r.func_name == func_name)
    if queue is not None:
        checks.append(lambda r: r.queue == queue)
    if query.tags:
        pairs = tuple(query.tags.items())
        checks.append(lambda r: all(r.tags.get(k) == v for k, v in pairs))
    after, before = query.created_after, query.created_before
    if after is not None:
        checks.append(lambda r: r.created_at >= after)
    if before is not None:
        checks.append(lambda r: r.created_at < before)
    text = query.q
    if text:
        checks.append(lambda r: matches_text(r, text))
    if not checks:
        return None
    if len(checks) == 1:
        return checks[0]
    return lambda r: all(check(r) for check in checks)
