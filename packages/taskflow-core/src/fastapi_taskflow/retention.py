"""Retention: finished tasks older than ``TaskManager(retention=...)`` are deleted.

Every instance runs one background loop that calls ``Store.purge`` in batches, shortly
after it starts and then every quarter of the retention period (at least every 0.5 s, at
most every hour). Deleting is idempotent, so instances sharing a store need no
coordination: whoever comes first deletes. Active tasks (PENDING, RUNNING) are never
deleted. ``retention=None`` keeps every record.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from .clock import Clock
from .errors import InvalidTaskError
from .protocols import Store
from .runtime import reraise_if_cancelled

__all__ = ["DEFAULT_RETENTION", "PURGE_BATCH", "Retention", "check_retention"]

logger = logging.getLogger("fastapi_taskflow")

DEFAULT_RETENTION = timedelta(days=7)
"""How long finished tasks are kept unless ``TaskManager(retention=...)`` says otherwise."""

PURGE_BATCH = 1000
"""Tasks deleted per ``Store.purge`` call."""


def check_retention(retention: object, field: str = "retention") -> timedelta | None:
    """Return ``retention`` if it is None or a positive ``timedelta``; else raise
    ``InvalidTaskError``."""
    if retention is None:
        return None
    if not isinstance(retention, timedelta) or retention <= timedelta(0):
        raise InvalidTaskError(
            f"{field} must be a positive datetime.timedelta (for example "
            f"timedelta(days=7)) or None to keep every task, got {retention!r}"
        )
    return retention


class Retention:
    """Deletes finished tasks older than ``keep``; one per engine.

    Args:
        clock: the time source the cutoff is computed from.
        keep: how long finished tasks are kept; None keeps them all.
    """

    def __init__(self, clock: Clock, keep: timedelta | None) -> None:
        self.clock = clock
        self.keep = check_retention(keep)

    @property
    def interval(self) -> float:
        """Seconds between two passes of the background loop."""
        assert self.keep is not None
        return min(max(self.keep.total_seconds() / 4, 0.5), 3600.0)

    async def purge(self, store: Store, older_than: timedelta) -> int:
        """Delete every finished task that finished more than ``older_than`` ago; return
        how many were deleted (in batches of ``PURGE_BATCH``)."""
        cutoff = self.clock.now() - older_than
        total = 0
        while True:
            deleted = await store.purge(finished_before=cutoff, batch_size=PURGE_BATCH)
            total += deleted
            if deleted < PURGE_BATCH:
                return total
            await asyncio.sleep(0)  # let requests through between batches

    async def run(self, store: Store) -> None:
        """Purge now and then every ``interval`` seconds; runs until cancelled. A failed
        pass (store unreachable) is logged and retried at the next one."""
        assert self.keep is not None
        while True:
            try:
                deleted = await self.purge(store, self.keep)
                if deleted:
                    logger.debug("retention: deleted %d finished task(s)", deleted)
            except Exception:
                reraise_if_cancelled()
                logger.debug("retention pass failed; will retry", exc_info=True)
            await asyncio.sleep(self.interval)
