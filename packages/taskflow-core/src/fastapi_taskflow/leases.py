"""Leases this instance holds, and the heartbeat that keeps them alive.

On a durable backend every task this instance has accepted but not finished carries a
lease owned by this instance: PENDING ones from the moment they are accepted (the lease
is taken *before* the record is written, so no record exists without one), RUNNING ones
until they finish. A heartbeat renews them all in one call. If the instance dies, the
leases expire and another instance adopts the tasks (see ``recovery``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .runtime import reraise_if_cancelled

if TYPE_CHECKING:
    from .engine import Engine
    from .protocols import TaskBackend

__all__ = ["LeaseKeeper", "open_control_backend"]

logger = logging.getLogger("fastapi_taskflow")


class LeaseKeeper:
    """The set of task ids whose lease this instance holds."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.held: set[str] = set()

    async def take(self, task_ids: Iterable[str]) -> None:
        """Lease every id to this instance (ids not yet created are fine)."""
        ids = list(task_ids)
        if not ids:
            return
        engine = self.engine
        backend = engine.backend
        results = await engine.availability.call(
            lambda: asyncio.gather(
                *(
                    backend.acquire_lease(
                        task_id, owner=engine.instance_id, lease_seconds=engine.lease_seconds
                    )
                    for task_id in ids
                )
            )
        )
        self.held.update(task_id for task_id, ok in zip(ids, results, strict=True) if ok)

    def hold(self, task_id: str) -> None:
        """Note a lease taken elsewhere (a claim)."""
        self.held.add(task_id)

    async def release(self, task_id: str) -> None:
        """Give the lease of a task back (it finished, or was handed to a queue)."""
        self.held.discard(task_id)
        engine = self.engine
        await engine.availability.persist(
            lambda: engine.backend.release_lease(task_id, owner=engine.instance_id)
        )

    async def heartbeat(self) -> None:
        """Renew every held lease each third of the lease time; runs until cancelled."""
        engine = self.engine
        interval = max(engine.lease_seconds / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            reraise_if_cancelled()
            held = list(self.held)
            try:
                if held:
                    kept = await engine.availability.call(
                        lambda held=held: engine.control_backend.renew_leases(  # type: ignore[misc]
                            held, owner=engine.instance_id, lease_seconds=engine.lease_seconds
                        )
                    )
                    for lost in set(held) - kept:
                        if lost in self.held:
                            logger.warning("lost the lease of task %s to another instance", lost)
                            self.held.discard(lost)
                elif not engine.availability.available:
                    await engine.availability.call(
                        lambda: engine.control_backend.queue_length("_probe")
                    )
            except Exception:
                reraise_if_cancelled()
                logger.debug("lease heartbeat failed; will retry", exc_info=True)


async def open_control_backend(backend: TaskBackend) -> TaskBackend | None:
    """Open a fork of ``backend`` for the heartbeat and recovery (a pool of their own, so
    lease renewals never queue behind request traffic); None if it cannot be opened."""
    control = backend.fork()
    try:
        await control.open()
    except Exception:
        logger.warning("no separate connection for lease heartbeats; sharing the pool")
        return None
    return control
