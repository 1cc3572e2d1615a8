"""``ManagedBackgroundTasks``: FastAPI's ``BackgroundTasks``, upgraded in place."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import BackgroundTasks

from .accept import accept
from .executor import execute
from .invocation import Invocation

if TYPE_CHECKING:
    from .manager import TaskManager
    from .runtime import Runtime

__all__ = ["ManagedBackgroundTasks", "make_background_func"]


class ManagedBackgroundTasks(BackgroundTasks):
    """A ``BackgroundTasks`` whose ``add_task()`` returns a task id and manages the task.

    It subclasses FastAPI's ``BackgroundTasks`` (itself a subclass of Starlette's), so
    ``isinstance`` checks against either pass and it can stand in wherever
    ``BackgroundTasks`` is used.

    Args:
        task_manager: the manager holding the registry, the store and the observers.
        background_tasks: the request's native ``BackgroundTasks``. Tasks added here are
            appended to its list, so Starlette runs them after the response. When None
            (direct construction, e.g. in a test or a startup hook), tasks wait in
            :attr:`tasks` until you await them: ``await tasks.tasks[-1]()``. Tasks with
            ``eager=True`` or ``priority=`` start by themselves either way.
    """

    def __init__(
        self, task_manager: TaskManager, background_tasks: BackgroundTasks | None = None
    ) -> None:
        # What BackgroundTasks.__init__() does, without its call (one per request):
        # a list of its own, or the native one shared, so Starlette runs ours too.
        self.tasks = background_tasks.tasks if background_tasks is not None else []
        self.task_manager = task_manager

    def add_task(  # type: ignore[override]
        self,
        func: Callable[..., Any],
        *args: Any,
        idempotency_key: str | None = None,
        tags: dict[str, str] | None = None,
        eager: bool | None = None,
        priority: int | None = None,
        **kwargs: Any,
    ) -> str:
        """Enqueue ``func(*args, **kwargs)`` as a managed task and return its id.

        Args:
            func: the task function; registered ones (``@task_manager.task()``) get their
                retries and settings, others run once.
            *args: positional arguments for ``func``.
            idempotency_key: when a task with this key exists and has not FAILED (or been
                REJECTED), return its id and enqueue nothing.
            tags: ``dict[str, str]`` labels stored on the task and sent with its events.
            eager: start now on the event loop instead of after the response; overrides
                the decorator's ``eager`` for this call. Ignored when ``priority`` is set.
            priority: run through the priority queue (higher first); overrides the
                decorator's ``priority`` for this call.
            **kwargs: keyword arguments for ``func``.

        Returns:
            The task id (a UUID string).

        Raises:
            InvalidTaskError: bad input (non-callable, tags not ``dict[str, str]``, a
                non-integer priority ...).
            TaskArgumentError: a durable backend cannot store an argument as JSON.
            QueueFullError: the task's queue is full; the task is recorded as REJECTED.
            EagerDispatchError: ``eager=True`` with no event loop to start on.
        """
        return accept(
            self.task_manager._engine,
            func,
            args,
            kwargs,
            idempotency_key=idempotency_key,
            tags=tags,
            eager=eager,
            priority=priority,
            sink=self.tasks,
        )

    async def __call__(self) -> None:
        """Run the tasks one after another, as Starlette does after the response.

        On a shared store, a task's successful outcome is written while the next task
        starts, so the two changes share one write; this returns once every outcome is
        written.
        """
        engine = self.task_manager._engine
        tasks = self.tasks
        finishing: list[asyncio.Task[None]] = []
        # An in-process store took every record at add_task(): no write buffer to wait
        # for, so a task runs without ``run_now``'s coroutine around it.
        in_process = engine.create_now is not None
        current: asyncio.Task[Any] | None = None
        runtime: Runtime | None = None
        try:
            index = 0
            while index < len(tasks):  # a task may add tasks to this list: run those too
                task = tasks[index]
                index += 1
                if type(task) is Invocation and task.runner is engine:
                    if in_process:
                        if runtime is None or engine.current_runtime is not runtime:
                            # first task, or the engine stopped since the last one
                            runtime = engine.current_runtime
                            if runtime is None or not runtime.is_current():
                                runtime = await engine.started()
                            current = asyncio.current_task(runtime.loop)
                            assert current is not None
                        if not task.attempts:  # else it ran already (awaited by hand)
                            await execute(
                                engine, task.task_id, task, claimed=False, current=current
                            )
                        continue
                    # The last task has no next start to share its write with.
                    later = finishing if index < len(tasks) else None
                    await engine.run_now(task.task_id, finishing=later)
                else:
                    await task()
        finally:
            if finishing:
                await asyncio.wait(finishing)


def make_background_func(task_manager: TaskManager, task_id: str) -> Callable[[], Awaitable[None]]:
    """Return a coroutine function that runs the accepted task ``task_id`` when awaited.

    This is what ``add_task()`` puts in ``ManagedBackgroundTasks.tasks``: Starlette awaits
    it after the response. Awaiting it yourself (in a test, or with
    ``asyncio.ensure_future``) runs the task with its retries, status and events exactly
    as in a request. Awaiting it twice runs the task once. Also importable as
    ``fastapi_taskflow.executor.make_background_func``.
    """
    engine = task_manager._engine

    async def run_task() -> None:
        await engine.run_now(task_id)

    run_task.__name__ = run_task.__qualname__ = f"taskflow_run_{task_id}"
    return run_task
