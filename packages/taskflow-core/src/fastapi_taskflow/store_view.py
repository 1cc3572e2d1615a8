"""``task_manager.store``: read tasks from sync or async code, on any backend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .errors import InvalidOperationError, InvalidTaskError
from .limits import check_lookup
from .models import TaskPage, TaskQuery, TaskRecord, TaskStats
from .protocols import TaskBackend

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
        """Return the task's record (with its logs), or None when no task has this id.

        Raises:
            InvalidOperationError: ``task_id`` is not a string.
        """
        check_lookup("task_id", task_id)
        buffered = self._engine.pending.get(task_id)
        if buffered is not None:
            return buffered.model_copy()
        return self._engine.bridge.run(lambda backend: backend.get(task_id))

    async def aget(self, task_id: str) -> TaskRecord | None:
        """Awaitable :meth:`get`."""
        check_lookup("task_id", task_id)
        buffered = self._engine.pending.get(task_id)
        if buffered is not None:
            return buffered.model_copy()
        backend = await self._engine.started_backend()
        return await backend.get(task_id)

    def find_by_key(self, idempotency_key: str) -> TaskRecord | None:
        """Return the task holding ``idempotency_key`` (not FAILED/REJECTED), or None.

        Raises:
            InvalidOperationError: ``idempotency_key`` is not a string.
        """
        check_lookup("idempotency_key", idempotency_key)
        return self._engine.bridge.run(lambda backend: backend.find_by_key(idempotency_key))

    async def afind_by_key(self, idempotency_key: str) -> TaskRecord | None:
        """Awaitable :meth:`find_by_key`."""
        check_lookup("idempotency_key", idempotency_key)
        backend = await self._engine.started_backend()
        return await backend.find_by_key(idempotency_key)

    def query(self, query: TaskQuery | None = None, **filters: Any) -> TaskPage:
        """Return one page of tasks, newest first.

        Pass a :class:`~fastapi_taskflow.models.TaskQuery` or its fields as keywords
        (``statuses=``, ``func_name=``, ``tags=``, ``limit=``, ``cursor=`` ...).

        ``func_name`` may be the name the task is registered under (what
        ``record.func_name`` shows: ``name=`` given to ``@task_manager.task``, else
        ``module.qualname``), or the function's short name (``send_email``) or
        qualified name (``Mailer.send``); see :meth:`resolve_func_name`.

        Raises:
            InvalidTaskError: ``func_name`` is a short name shared by several tasks.
            InvalidOperationError: a keyword that is not a filter (``status=`` for
                ``statuses=``), or a value a filter does not take (``limit=0``).
        """
        q = query or _task_query(filters)
        self._flush_blocking()
        return self._engine.bridge.run(lambda backend: self._query(backend, q))

    async def aquery(self, query: TaskQuery | None = None, **filters: Any) -> TaskPage:
        """Awaitable :meth:`query`."""
        q = query or _task_query(filters)
        await self._engine.flush()
        return await self._query(self._engine.backend, q)

    async def resolve_func_name(self, name: str, backend: TaskBackend | None = None) -> str:
        """Return the stored name (``record.func_name``) that ``name`` designates.

        In order: a name registered on this manager; a registered function whose short
        name, qualified name or ``module.qualname`` is ``name``; a name present in the
        store (every instance's tasks, from ``stats()``) equal to ``name`` or ending in
        ``.`` + ``name``. A name that matches nothing is returned unchanged (the query
        then finds nothing).

        Raises:
            InvalidTaskError: ``name`` matches several tasks; the message lists them.
        """
        registered = self._engine.registry.names_matching(name)
        if len(registered) == 1:
            return registered.pop()
        if not registered:
            store = backend or self._engine.backend
            stored = (await store.stats()).by_func
            if name in stored:
                return name
            registered = {full for full in stored if full.endswith(f".{name}")}
            if len(registered) == 1:
                return registered.pop()
        if not registered:
            return name
        raise InvalidTaskError(
            f"func_name={name!r} matches several tasks: {', '.join(sorted(registered))}; "
            "pass one of these names"
        )

    async def _query(self, backend: TaskBackend, q: TaskQuery) -> TaskPage:
        if q.func_name is not None:
            resolved = await self.resolve_func_name(q.func_name, backend)
            if resolved != q.func_name:
                q = q.model_copy(update={"func_name": resolved})
        return await backend.query(q)

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
                    backend, on_refused=engine.refusal_handler(backend)
                )
            )


def _task_query(filters: dict[str, Any]) -> TaskQuery:
    """The :class:`TaskQuery` of ``query()``'s keyword filters, or an error naming what
    is wrong with them."""
    try:
        return TaskQuery(**filters)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        known = ", ".join(f"{name}=" for name in TaskQuery.model_fields)
        raise InvalidOperationError(
            f"bad task query ({problems}); the filters are {known}"
        ) from None
