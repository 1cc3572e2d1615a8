"""Queue workers: claim due tasks from the backend's priority queue and run them.

One worker per named queue and event loop. It claims at most as many tasks as it has
free slots (``QueueConfig.concurrency``), so a queue never runs more than that at once on
this instance, and sleeps until woken (a local enqueue, a finished task, a retry coming
due) or until the poll interval passes (tasks enqueued by other instances).

A claim that fails (in any way) may have been applied with its reply lost: the worker
then sweeps its queue for the tasks such a claim took, after its next successful claim
(see ``lost_claims``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .config import QueueConfig
from .errors import BackendUnavailableError
from .lost_claims import LostClaims
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
        lost: LostClaims | None = None,
    ) -> None:
        """``claim(n)`` takes up to ``n`` due tasks of ``queue`` for this instance;
        ``run(claim)`` runs one of them; ``lost``: the sweep for the tasks of a claim
        whose reply was lost (None: claims never lose replies, as in process)."""
        self.queue = queue
        self.config = config
        self.runtime = runtime
        self._claim = claim
        self._run_claimed = run
        self.availability = availability
        self.poll_interval = poll_interval
        self.lost = lost
        self.active: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the worker loop on the current runtime (idempotent).

        Not while the runtime stops: a task put (back) on the queue during a shutdown
        (one interrupted with ``requeue_on_interrupt``) waits there for another
        instance, instead of being claimed again by the one shutting down. Nor on a
        passive runtime (the store served after a shutdown): a task queued then waits
        for the next startup or another instance.
        """
        if self.runtime.stopping or self.runtime.passive:
            return
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
            claimed = False
            if free > 0:
                try:
                    claims = await self._claim(free)
                    claimed = True
                except BackendUnavailableError as exc:
                    reraise_if_cancelled()
                    self._claim_failed()
                    self.availability.failed(exc)
                    logger.debug("claiming from queue %r: store unreachable", self.queue)
                except Exception:
                    reraise_if_cancelled()
                    self._claim_failed()
                    logger.exception("claiming from queue %r failed; retrying", self.queue)
            self._start(claims)
            if claimed and self.lost is not None and self.lost.armed:
                self._start(await self._sweep())
            if claims:
                continue  # more may be due: claim again while slots are free
            # until woken or the poll interval passes (a timer, not a wait_for task)
            timer = asyncio.get_running_loop().call_later(self.poll_interval, self._wake.set)
            try:
                await self._wake.wait()
            finally:
                timer.cancel()

    def _claim_failed(self) -> None:
        """The claim may have been applied with its reply lost: sweep once the store
        answers again."""
        if self.lost is not None:
            self.lost.arm()

    async def _sweep(self) -> list[Claim]:
        """The tasks a lost claim took (none if the sweep fails: it stays armed)."""
        assert self.lost is not None
        try:
            return await self.lost.sweep(self.active.__contains__)
        except BackendUnavailableError as exc:
            reraise_if_cancelled()
            self.availability.failed(exc)
            logger.debug("queue %r: store unreachable while sweeping; will retry", self.queue)
        except Exception:
            reraise_if_cancelled()
            logger.exception(
                "queue %r: looking for the tasks of a lost claim failed; retrying", self.queue
            )
        return []

    def _start(self, claims: list[Claim]) -> None:
        for claim in claims:
            self.active.add(claim.task_id)
            self.runtime.spawn(self._execute(claim), name=f"taskflow-{claim.task_id}")

    async def _execute(self, claim: Claim) -> None:
        try:
            await self._run_claimed(claim)
        finally:
            self.active.discard(claim.task_id)
            self._wake.set()
