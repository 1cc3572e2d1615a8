"""The tasks a TaskManager knows by name."""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import TaskConfig
from .errors import InvalidTaskError

__all__ = [
    "RegisteredTask",
    "TaskRegistry",
    "default_name",
    "is_async_callable",
    "unrecoverable_reason",
]


@dataclass(frozen=True)
class RegisteredTask:
    """A task function with its settings."""

    func: Callable[..., Any]
    config: TaskConfig
    registered: bool
    is_async: bool = field(default=False)
    """The function returns a coroutine (classified once, at registration)."""


def is_async_callable(func: Any) -> bool:
    """True when calling ``func`` returns a coroutine: an ``async def`` function, a
    ``functools.partial`` of one, or an object whose ``__call__`` is ``async def``."""
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.iscoroutinefunction(func):
        return True
    call = type(func).__dict__.get("__call__") if not inspect.isroutine(func) else None
    return call is not None and inspect.iscoroutinefunction(call)


def default_name(func: Callable[..., Any]) -> str:
    """Return ``module.qualname`` of ``func``: the name a task is registered under.

    A ``functools.partial`` is named after the function it wraps:
    ``functools.partial(module.qualname)``.
    """
    if isinstance(func, functools.partial):
        inner = func.func
        while isinstance(inner, functools.partial):
            inner = inner.func
        return f"functools.partial({default_name(inner)})"
    module = getattr(func, "__module__", None) or "__main__"
    qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    if qualname is None:
        qualname = type(func).__qualname__
    return f"{module}.{qualname}"


def unrecoverable_reason(name: str) -> str | None:
    """Say why no process can ever find a function named ``name`` by its name (a lambda,
    a closure, a function of ``__main__``), or return None."""
    if name.startswith("functools.partial("):
        return (
            "it is a functools.partial, whose bound arguments are not stored with the "
            "task (pass them to add_task() instead)"
        )
    if "<lambda>" in name:
        return "it is a lambda"
    if "<locals>" in name:
        return "it is defined inside another function"
    if name.startswith("__main__."):
        return "it is defined in __main__, which is another program in another process"
    return None


class TaskRegistry:
    """Registered tasks, found by function or by name; thread-safe."""

    def __init__(self) -> None:
        self._by_name: dict[str, RegisteredTask] = {}
        self._by_func: dict[Any, RegisteredTask] = {}
        self._lock = threading.Lock()

    def register(self, func: Callable[..., Any], config: TaskConfig) -> RegisteredTask:
        """Register ``func`` under ``config.name``.

        Raises:
            InvalidTaskError: another function already has that name.
        """
        entry = RegisteredTask(func, config, registered=True, is_async=is_async_callable(func))
        with self._lock:
            existing = self._by_name.get(config.name)
            if existing is not None and existing.func is not func:
                raise InvalidTaskError(
                    f"two task functions are registered as {config.name!r}; give one a "
                    "distinct name with @task_manager.task(name=...)"
                )
            self._by_name[config.name] = entry
            self._by_func[func] = entry
        return entry

    def resolve(self, func: Callable[..., Any]) -> RegisteredTask:
        """Return the registration of ``func``, or an unregistered entry (run once)."""
        try:
            found = self._by_func.get(func)
        except TypeError:  # unhashable callable
            found = None
        if found is not None:
            return found
        return RegisteredTask(
            func,
            TaskConfig(name=default_name(func)),
            registered=False,
            is_async=is_async_callable(func),
        )

    def is_async(self, func: Callable[..., Any]) -> bool:
        """Whether ``func`` is a coroutine function; registered ones were classified
        at registration, so no ``inspect`` runs per call."""
        try:
            found = self._by_func.get(func)
        except TypeError:  # unhashable callable
            found = None
        return found.is_async if found is not None else is_async_callable(func)

    def by_name(self, name: str) -> RegisteredTask | None:
        """Return the task registered as ``name``, or None."""
        return self._by_name.get(name)

    def names_matching(self, name: str) -> set[str]:
        """Return the registered names of the tasks ``name`` designates.

        ``name`` may be a registered name, or a function's short name (``send_email``),
        qualified name (``Mailer.send``) or ``module.qualname``; a short name can match
        several functions.
        """
        with self._lock:
            if name in self._by_name:
                return {name}
            return {
                entry.config.name
                for entry in self._by_name.values()
                if name in _names_of(entry.func)
            }

    def names(self) -> list[str]:
        """Return every registered name, sorted."""
        return sorted(self._by_name)


def _names_of(func: Callable[..., Any]) -> set[str]:
    names = {default_name(func)}
    for attr in ("__name__", "__qualname__"):
        value = getattr(func, attr, None)
        if isinstance(value, str):
            names.add(value)
    return names
