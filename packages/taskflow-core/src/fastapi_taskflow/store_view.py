"""``task_manager.store``: read tasks from sync or async code, on any backend."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from .models import TaskPage, TaskQuery, TaskRecord, TaskStats
from .refused import record_refusals

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["TaskStore"]


class TaskStore:
    """Reads the task manager's store.

    The plain methods block until the answer is in (they are made for ``def`` routes,
    which FastAPI runs in a thread pool); in ``async def`` code use the ``a``-prefixed
    awaitable forms so the event loop is not blocked. Tasks accepted a moment ago but not
    yet written to the store are seen too.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def get(self, task_id: str) -> TaskRecord | None:
        """Return the task's record (with its logs), or None when no task has this id."""
        buffered = self._engine.pending.get(task_id)
        if buffered is not None:
            return buffered.model_copy()
        return self._engine.bridge.run(lambda backend: backend.get(task_id))

    async def aget(self, task_id: str) -> TaskRecord | None:
        """Awaitable :meth:`get`."""
        buffered = self._engine.pending.get(task_id)
        if buffered is not None:
            return buffered.model_copy()
        backend = await self._engine.started_backend()
        return await backend.get(task_id)

    def find_by_key(self, idempotency_key: str) -> TaskRecord | None:
        """Return the task holding ``idempotency_key`` (not FAILED/REJECTED), or None."""
        return self._engine.bridge.run(lambda backend: backend.find_by_key(idempotency_key))

    async def afind_by_key(self, idempotency_key: str) -> TaskRecord | None:
        """Awaitable :meth:`find_by_key`."""
        backend = await self._engine.started_backend()
        return await backend.find_by_key(idempotency_key)

    def query(self, query: TaskQuery | None = None, **filters: Any) -> TaskPage:
        """Return one page of tasks, newest first.

        Pass a :class:`~fastapi_taskflow.models.TaskQuery` or its fields as keywords
        (``statuses=``, ``func_name=``, ``tags=``, ``limit=``, ``cursor=`` ...).
        """
        q = query or TaskQuery(**filters)
        self._flush_blocking()
        return self._engine.bridge.run(lambda backend: backend.query(q))

    async def aquery(self, query: TaskQuery | None = None, **filters: Any) -> TaskPage:
        """Awaitable :meth:`query`."""
        q = query or TaskQuery(**filters)
        await self._engine.flush()
        return await self._engine.backend.query(q)

    def stats(self) -> TaskStats:
        """Return task counts by status and by function name."""
        self._flush_blocking()
        return self._engine.bridge.run(lambda backend: backend.stats())

    async def astats(self) -> TaskStats:
        """Awaitable :meth:`stats`."""
        await self._engine.flush()
        return await self._engine.backend.stats()

    def _flush_blocking(self) -> None:
        engine = self._engine
        if len(engine.pending):
            engine.bridge.run(
                lambda backend: engine.pending.flush(
                    backend, on_refused=partial(record_refusals, engine, backend)
                )
            )
