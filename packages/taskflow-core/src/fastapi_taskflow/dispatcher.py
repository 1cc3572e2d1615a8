"""Queue workers: claim due tasks from the backend's priority queue and run them.

One worker per named queue and event loop. It claims at most as many tasks as it has
free slots (``QueueConfig.concurrency``), so a queue never runs more than that at once on
this instance, and sleeps until woken (a local enqueue, a finished task, a retry coming
due) or until the poll interval passes (tasks enqueued by other instances).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .config import QueueConfig
from .errors import BackendUnavailableError
from .models import Claim
from .resilience import Availability
from .runtime import Runtime, reraise_if_cancelled

__all__ = ["QueueWorker"]

logger = logging.getLogger("fastapi_taskflow")


class QueueWorker:
    """Runs the tasks of one queue on one event loop."""

    def __init__(
        self,
        queue: str,
        config: QueueConfig,
        *,
        runtime: Runtime,
        claim: Callable[[int], Awaitable[list[Claim]]],
        run: Callable[[Claim], Awaitable[None]],
        availability: Availability,
        poll_interval: float,
    ) -> None:
        """``claim(n)`` takes up to ``n`` due tasks of ``queue`` for this instance;
        ``run(claim)`` runs one of them."""
        self.queue = queue
        self.config = config
        self.runtime = runtime
        self._claim = claim
        self._run_claimed = run
        self.availability = availability
        self.poll_interval = poll_interval
        self.active: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the worker loop on the current runtime (idempotent)."""
        if self._task is None or self._task.done():
            self._task = self.runtime.spawn(self._run(), name=f"taskflow-queue-{self.queue}")

    def wake(self) -> None:
        """Make the worker look for due tasks now; call on the worker's loop."""
        self._wake.set()

    def wake_later(self, delay: float) -> None:
        """Wake the worker after ``delay`` seconds (a retry coming due)."""
        asyncio.get_running_loop().call_later(max(delay, 0.0), self._wake.set)

    async def stop(self) -> None:
        """Stop claiming; tasks already running are left to the engine's shutdown."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            reraise_if_cancelled()
            self._wake.clear()
            free = self.config.concurrency - len(self.active)
            claims: list[Claim] = []
            if free > 0:
                try:
                    claims = await self._claim(free)
                except BackendUnavailableError as exc:
                    reraise_if_cancelled()
                    self.availability.failed(exc)
                    logger.debug("claiming from queue %r: store unreachable", self.queue)
                except Exception:
                    reraise_if_cancelled()
                    logger.exception("claiming from queue %r failed; retrying", self.queue)
            for claim in claims:
                self.active.add(claim.task_id)
                self.runtime.spawn(self._execute(claim), name=f"taskflow-{claim.task_id}")
            if claims:
                continue  # more may be due: claim again while slots are free
            # until woken or the poll interval passes (a timer, not a wait_for task)
            timer = asyncio.get_running_loop().call_later(self.poll_interval, self._wake.set)
            try:
                await self._wake.wait()
            finally:
                timer.cancel()

    async def _execute(self, claim: Claim) -> None:
        try:
            await self._run_claimed(claim)
        finally:
            self.active.discard(claim.task_id)
            self._wake.set()
