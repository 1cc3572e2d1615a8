"""Injected time.

Backends and the engine never call ``datetime.now()`` directly: they ask a :class:`Clock`.
Production code uses :class:`SystemClock`; the conformance suite and tests use
:class:`ManualClock` and advance it, so lease expiry and retry delays are tested without
sleeping.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Protocol, runtime_checkable

from .errors import InvalidOperationError

__all__ = ["Clock", "ManualClock", "SystemClock", "utcnow"]


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)


@runtime_checkable
class Clock(Protocol):
    """A source of the current time (aware, UTC)."""

    def now(self) -> datetime:
        """Return the current time as an aware UTC datetime."""
        ...


_UTC = timezone.utc


class SystemClock:
    """The wall clock."""

    moves_by_itself = True
    """Time passes while a timer sleeps: a timer may sleep until its moment."""

    def __init__(self) -> None:
        # datetime.now(UTC) itself, with no Python frame around it: the engine reads
        # the clock several times per task.
        self.now: Callable[[], datetime] = partial(datetime.now, _UTC)
        """Return the current wall-clock time in UTC."""


class ManualClock:
    """A clock that moves only when told to; thread-safe.

    Args:
        start: the initial time; defaults to 2030-01-01T00:00:00Z so tests are repeatable.
    """

    moves_by_itself = False
    """Time moves only by :meth:`advance`: timers (a schedule's) re-read the clock every
    ``poll_interval`` instead of sleeping until their moment."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2030, 1, 1, tzinfo=timezone.utc)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """Return the clock's current time."""
        with self._lock:
            return self._now

    def advance(self, seconds: float = 0.0, **delta: float) -> datetime:
        """Move the clock forward and return the new time.

        Args:
            seconds: how far to move, in seconds.
            **delta: any other ``timedelta`` keyword (``minutes=``, ``hours=`` ...).
        """
        step = timedelta(seconds=seconds, **delta)
        if step < timedelta(0):
            raise InvalidOperationError("a ManualClock only moves forward; pass a positive amount")
        with self._lock:
            self._now += step
            return self._now
