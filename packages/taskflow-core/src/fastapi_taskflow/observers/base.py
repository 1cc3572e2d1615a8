"""The observer base class and the chain that calls observers safely."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable

from ..errors import InvalidTaskError
from ..events import LifecycleEvent, LogEvent
from ..protocols import Observer

__all__ = ["BaseObserver", "ObserverChain", "check_observer"]

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


def check_observer(observer: object) -> None:
    """Raise ``InvalidTaskError`` unless ``observer`` is an observer: an instance with
    ``async def on_lifecycle`` and ``async def on_log`` (see :class:`BaseObserver`).

    Checked when it is given, not at the first event: a class passed for an instance,
    or a plain ``def`` method, would otherwise fail on every event, after the method
    had run (a ``def`` one), with only a logged error to say so.
    """
    if isinstance(observer, type):
        name = observer.__name__
        raise InvalidTaskError(
            f"observers take instances: pass {name}(), not the class {name} itself"
        )
    for method in ("on_lifecycle", "on_log"):
        found = getattr(observer, method, None)
        if not callable(found):
            raise InvalidTaskError(
                f"{type(observer).__name__} is not an observer: it has no {method}() "
                "method. Subclass fastapi_taskflow.BaseObserver and override the methods "
                "you need."
            )
        if not inspect.iscoroutinefunction(found):
            raise InvalidTaskError(
                f"{type(observer).__name__}.{method} must be 'async def' (it is awaited "
                "for every event); do blocking work in a thread from there"
            )


class ObserverChain:
    """Calls each observer in order; an observer that raises is logged and skipped.

    An observer that fails on every event would otherwise flood the log, so the first
    failure of each observer with each exception type is logged with its traceback, and
    later ones are only counted (``failures``), with a one-line warning when the count
    reaches 10, 100, 1000 and so on.

    Attributes:
        failures: how many events each observer (by ``id``) has failed on.
    """

    def __init__(self, observers: Iterable[Observer] = ()) -> None:
        """Raises ``InvalidTaskError`` for anything that is not an observer (see
        :func:`check_observer`)."""
        self.observers: list[Observer] = list(observers)
        for observer in self.observers:
            check_observer(observer)
        self.failures: dict[int, int] = {}
        self._reported: set[tuple[int, type[BaseException]]] = set()
        self.on_change: Callable[[], None] | None = None
        """Called after :meth:`add` (the event hub keeps its ``listening`` current)."""

    def add(self, observer: Observer) -> None:
        """Append an observer to the chain (checked as :func:`check_observer` does)."""
        check_observer(observer)
        self.observers.append(observer)
        if self.on_change is not None:
            self.on_change()

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
            except Exception as exc:
                self._failed(observer, event, exc)

    def _failed(self, observer: Observer, event: LifecycleEvent | LogEvent, exc: Exception) -> None:
        count = self.failures.get(id(observer), 0) + 1
        self.failures[id(observer)] = count
        key = (id(observer), type(exc))
        if key not in self._reported:
            self._reported.add(key)
            logger.error(
                "observer %r failed on %s event of task %s; the task is unaffected. "
                "Further %s failures of this observer are counted, not logged each time",
                observer,
                event.type,
                event.task_id,
                type(exc).__name__,
                exc_info=exc,
            )
        elif _is_power_of_ten(count):
            logger.warning(
                "observer %r has failed on %d events so far (last: %s: %s)",
                observer,
                count,
                type(exc).__name__,
                exc,
            )


def _is_power_of_ten(n: int) -> bool:
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1
