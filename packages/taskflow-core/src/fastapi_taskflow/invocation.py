"""How to run an accepted task in this process: its function, arguments and settings."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.background import BackgroundTask

from .config import DEFAULT_QUEUE, TaskConfig

__all__ = ["BACKGROUND", "EAGER", "QUEUED", "Invocation", "Runner"]

QUEUED, EAGER, BACKGROUND = "queued", "eager", "background"
"""The routes of an accepted task (see ``accept``)."""


class Runner(Protocol):
    """What runs an accepted task by its id: the engine (``Engine.run_now``)."""

    def run_now(self, task_id: str) -> Awaitable[None]:
        """Run the task ``task_id`` if it is still to run here."""
        ...


@dataclass(slots=True, eq=False)
class Invocation(BackgroundTask):
    """A task's function and arguments, held in process until it finishes.

    It is also the task's entry in its request's background task list: a Starlette
    ``BackgroundTask`` whose ``func``, ``args`` and ``kwargs`` are the call's, as in the
    entry FastAPI's own ``add_task()`` makes, and awaiting it runs the task under
    taskflow (its status, retries and events), once however often it is awaited. One
    object per task for both jobs: a task waiting for the response costs the garbage
    collector one object fewer.
    """

    func: Callable[..., Any]
    # Starlette types these with the ParamSpec of ``func``; here they are what a call
    # of any function passes.
    args: tuple[Any, ...]  # type: ignore[assignment]
    kwargs: dict[str, Any]  # type: ignore[assignment]
    config: TaskConfig
    task_id: str
    runner: Runner
    """Runs the task when this entry is awaited (the engine that accepted it)."""
    is_async: bool
    """``func`` returns a coroutine (classified once, at registration)."""
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    route: str = BACKGROUND
    attempts: int = 0
    func_name: str = ""
    """The name its record is stored under (set for a shared store only: see
    ``executor._running``)."""
    tags: Mapping[str, str] | None = None
    """Its record's tags (None: none; set for a shared store only)."""
    requeue_on_interrupt: bool = False
    """Its record's ``requeue_on_interrupt`` (set for a shared store only)."""

    async def __call__(self) -> None:
        """Run the task (what Starlette does after the response); see the class."""
        await self.runner.run_now(self.task_id)
