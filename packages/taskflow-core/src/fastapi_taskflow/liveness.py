"""This instance's heartbeat, and the judgement of which other instances are dead.

On a durable backend every active task (PENDING or RUNNING) names its owner on its
record: the instance that accepted it, or claimed it from a queue, or started it. Each
instance writes one heartbeat every ``liveness_seconds / 5`` (``Backend.beat``): one
small write whatever the number of tasks it holds. Another instance takes an owner for
dead, and adopts its tasks (see ``recovery``), only on evidence it gathered itself:

* it has been connected to the store without a gap for at least ``liveness_seconds``,
  long enough to see a live instance renew its heartbeat several times; and
* over that whole time the owner's heartbeat did not change (or it had none).

After an outage of the store (or a stall of this instance's own loop) the observation
starts again from nothing, and nobody is declared dead before two ``liveness_seconds``
have passed: the other instances could not beat while the store was down, and may need
longer than this one to reconnect; they renew within a beat of reconnecting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from .protocols import TaskBackend
from .resilience import Availability
from .runtime import reraise_if_cancelled, within

__all__ = ["DeathWatch", "beat_forever", "open_control_backend"]

logger = logging.getLogger("fastapi_taskflow")

BEATS_PER_PERIOD = 5
"""Heartbeats (and scans) per ``liveness_seconds``."""


def beat_interval(liveness_seconds: float) -> float:
    """Seconds between two heartbeats of an instance, and between two scans."""
    return max(liveness_seconds / BEATS_PER_PERIOD, 0.02)


async def beat_forever(
    backend: TaskBackend, availability: Availability, instance_id: str, liveness_seconds: float
) -> None:
    """Write this instance's heartbeat now and every beat interval; runs until cancelled.

    A failed beat is retried at the next interval (and marks the store unavailable, so
    new tasks are refused until it answers again). A beat that does not answer within
    half the liveness period is given up and sent again, so a connection left hanging by
    an outage never holds the heartbeat back once the store is reachable.
    """
    interval = beat_interval(liveness_seconds)
    patience = max(liveness_seconds / 2, interval)
    while True:
        reraise_if_cancelled()
        try:
            await within(patience, availability.call(lambda: backend.beat(instance_id)))
        except Exception:
            reraise_if_cancelled()
            logger.debug("heartbeat failed; will retry", exc_info=True)
        await asyncio.sleep(interval)


@dataclass(slots=True)
class _Sighting:
    """An owner's heartbeat as last seen, and since when it has not changed."""

    beat: datetime | None
    unchanged_since: float


class DeathWatch:
    """Which instances are dead, judged from successive reads of the heartbeats.

    ``observe()`` is called with every successful read of the heartbeats and of the
    owners of active tasks; ``lost_contact()`` when a read failed. Heartbeat values are
    only compared with each other (a change means the instance is alive), and the watch
    measures time with this process's monotonic clock, so clocks that disagree between
    machines never make an instance look dead.
    """

    def __init__(
        self,
        instance_id: str,
        liveness_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.instance_id = instance_id
        self.period = liveness_seconds
        self.max_gap = liveness_seconds / 2
        self._monotonic = monotonic
        self._sightings: dict[str, _Sighting] = {}
        self._last_read: float | None = None
        self._lost = False
        self._quiet_until = 0.0

    def lost_contact(self) -> None:
        """Forget everything seen: a read failed, so the next ones start a new watch."""
        self._sightings.clear()
        self._last_read = None
        self._lost = True

    def observe(self, heartbeats: dict[str, datetime], owners: set[str]) -> list[str]:
        """Take in one read; return the instances now known to be dead (never this one)."""
        now = self._monotonic()
        if self._last_read is not None and now - self._last_read > self.max_gap:
            # This instance was not watching (its loop stalled, or reads were slow): what
            # it saw before the gap proves nothing about the time in between.
            self._sightings.clear()
            self._lost = True
        if self._lost:  # back after losing the store: others may reconnect more slowly
            self._lost = False
            self._quiet_until = now + 2 * self.period
        self._last_read = now
        seen = self._sightings
        for instance in seen.keys() - heartbeats.keys() - owners:
            del seen[instance]  # gone for good: nothing to adopt, no heartbeat
        dead: list[str] = []
        for instance in heartbeats.keys() | owners:
            if instance == self.instance_id:
                continue
            beat = heartbeats.get(instance)
            sighting = seen.get(instance)
            if sighting is None or sighting.beat != beat:
                seen[instance] = _Sighting(beat, now)
            elif now - sighting.unchanged_since >= self.period and now >= self._quiet_until:
                dead.append(instance)
        return dead

    def forget(self, instance: str) -> None:
        """Stop tracking an instance whose tasks were all adopted."""
        self._sightings.pop(instance, None)


async def open_control_backend(backend: TaskBackend) -> TaskBackend | None:
    """Open a fork of ``backend`` for the heartbeat and recovery (a pool of their own, so
    heartbeats never queue behind request traffic); None if it cannot be opened."""
    control = backend.fork()
    try:
        await control.open()
    except Exception:
        logger.warning("no separate connection for heartbeats; sharing the pool")
        return None
    return control
