"""How to run an accepted task in this process: its function, arguments and settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import DEFAULT_QUEUE, TaskConfig

__all__ = ["BACKGROUND", "EAGER", "QUEUED", "Invocation"]

QUEUED, EAGER, BACKGROUND = "queued", "eager", "background"
"""The routes of an accepted task (see ``accept``)."""


@dataclass(slots=True)
class Invocation:
    """A task's function and arguments, held in process until it finishes."""

    func: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    config: TaskConfig
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    route: str = BACKGROUND
    attempts: int = 0
    is_async: bool | None = None
    """``func`` returns a coroutine; None: not classified yet (done on first run)."""
    func_name: str = ""
    """The name its record is stored under (set for a shared store only: see
    ``executor._running``)."""
    tags: dict[str, str] | None = None
    """Its record's tags (None: none; set for a shared store only)."""
    requeue_on_interrupt: bool = False
    """Its record's ``requeue_on_interrupt`` (set for a shared store only)."""
