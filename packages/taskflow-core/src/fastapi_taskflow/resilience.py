"""Riding out backend outages.

While the store is unreachable, new tasks are refused at once (``BackendUnavailableError``,
which a route can turn into a 503: nothing was accepted, so nothing is lost), and writes
about tasks already accepted (their transitions and logs) are retried with backoff until
the store is back. No restart is needed: the first successful call marks it available.

While the store is known to be down, ``check()`` still lets one new task through now and
then (every ``first_delay`` seconds, doubling up to ``max_delay``) as a probe, like a
circuit breaker's half-open state: if its write succeeds the store is marked available,
so new tasks are accepted again within ``max_delay`` of the store's return, however
quiet the rest of the engine is. With ``install()`` a probe whose write fails is answered
503 like the refused ones.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .errors import BackendUnavailableError
from .redaction import mask_secrets
from .runtime import reraise_if_cancelled

__all__ = ["Availability"]

T = TypeVar("T")
logger = logging.getLogger("fastapi_taskflow")


class Availability:
    """Tracks whether the backend answers, and retries writes while it does not.

    Args:
        first_delay: seconds before the first retry of a failed write.
        max_delay: the cap of the doubling delay between retries.
    """

    def __init__(
        self,
        *,
        first_delay: float = 0.05,
        max_delay: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.available = True
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.last_error: BaseException | None = None
        self._clock = clock
        self._probe_delay = first_delay
        self._probe_at = 0.0

    def check(self) -> None:
        """Raise ``BackendUnavailableError`` if the backend is known to be down.

        Once per probe interval the call passes instead, so that one new task probes
        the store (see the module docstring).
        """
        if self.available:
            return
        now = self._clock()
        if now >= self._probe_at:
            self._probe_delay = min(self._probe_delay * 2, self.max_delay)
            self._probe_at = now + self._probe_delay
            return
        raise BackendUnavailableError(
            "the task store is unreachable, so no task was accepted; retry later "
            "(a route can answer 503). The store's own error is this error's __cause__ "
            "and was logged when the outage began.",
            task_refused=True,
        ) from self.last_error

    def failed(self, exc: BaseException) -> None:
        """Record that a call failed because the backend is unreachable."""
        if self.available:
            logger.warning(
                "task backend unreachable: %s; retrying with backoff", mask_secrets(str(exc))
            )
            self._probe_delay = self.first_delay
            self._probe_at = self._clock() + self._probe_delay
        self.available = False
        self.last_error = exc

    def succeeded(self) -> None:
        """Record that a call went through."""
        if not self.available:
            logger.warning("task backend reachable again")
        self.available = True
        self._probe_delay = self.first_delay

    async def call(self, op: Callable[[], Awaitable[T]]) -> T:
        """Await ``op()`` once, recording the backend's availability."""
        try:
            result = await op()
        except BackendUnavailableError as exc:
            self.failed(exc)
            raise
        self.succeeded()
        return result

    async def persist(self, op: Callable[[], Awaitable[T]]) -> T:
        """Await ``op()``, retrying with backoff while the backend is unreachable.

        Only ``BackendUnavailableError`` is retried; other errors propagate. Cancelling the
        caller stops the retries.
        """
        try:
            result = await op()  # the common case, without the retry loop's frames
        except BackendUnavailableError as exc:
            self.failed(exc)
            reraise_if_cancelled()
        else:
            if not self.available:
                self.succeeded()
            return result
        delay = self.first_delay
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_delay)
            try:
                return await self.call(op)
            except BackendUnavailableError:
                reraise_if_cancelled()

    async def persist_while(
        self, needed: Callable[[], bool], op: Callable[[], Awaitable[object]]
    ) -> None:
        """Await ``op()`` while ``needed()`` holds, retrying with backoff as ``persist``.

        For a write that may become unnecessary while it is retried: a task waiting for
        the write buffer stops waiting once its own record has left the buffer (written
        by anyone, or dropped because its request was refused).
        """
        delay = self.first_delay
        while needed():
            try:
                await self.call(op)
            except BackendUnavailableError:
                reraise_if_cancelled()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_delay)
