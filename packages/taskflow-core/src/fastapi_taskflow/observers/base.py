"""The observer base class and the chain that calls observers safely."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ..events import LifecycleEvent, LogEvent
from ..protocols import Observer

__all__ = ["BaseObserver", "ObserverChain"]

logger = logging.getLogger("fastapi_taskflow")


class BaseObserver:
    """An observer that ignores everything; override the methods you need.

    Attributes:
        remote_events: also receive the events of tasks run by other instances (shared
            backends only). False by default, so each event is handled once per fleet.
    """

    remote_events: bool = False

    async def on_lifecycle(self, event: LifecycleEvent) -> None:
        """Called when a task changes status."""

    async def on_log(self, event: LogEvent) -> None:
        """Called when a task writes a log line."""


class ObserverChain:
    """Calls each observer in order; an observer that raises is logged and skipped."""

    def __init__(self, observers: Iterable[Observer] = ()) -> None:
        self.observers: list[Observer] = list(observers)

    def add(self, observer: Observer) -> None:
        """Append an observer to the chain."""
        self.observers.append(observer)

    async def emit(self, event: LifecycleEvent | LogEvent) -> None:
        """Deliver ``event`` to every observer; never raises."""
        await self._deliver(self.observers, event)

    async def emit_remote(self, event: LifecycleEvent | LogEvent) -> None:
        """Deliver another instance's event to the observers with ``remote_events``."""
        wanted = [o for o in self.observers if getattr(o, "remote_events", False)]
        if wanted:
            await self._deliver(wanted, event)

    async def _deliver(self, observers: list[Observer], event: LifecycleEvent | LogEvent) -> None:
        for observer in observers:
            try:
                if isinstance(event, LifecycleEvent):
                    await observer.on_lifecycle(event)
                else:
                    await observer.on_log(event)
            except Exception:
                logger.exception(
                    "observer %r failed on %s event of task %s; the task is unaffected",
                    observer,
                    event.type,
                    event.task_id,
                )
