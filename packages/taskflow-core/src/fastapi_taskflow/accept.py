"""Accepting a task: validate, record, route. The body of every ``add_task()``.

Routing of an accepted task:

* ``priority=`` set, or the task names a queue, or it comes from
  ``task_manager.add_task()`` → the backend's priority queue, run by a queue worker
  (``eager`` is ignored);
* ``eager=True`` → started on the event loop at once, before the response;
* otherwise → appended to the request's background task list; Starlette runs it after
  the response is sent.

``add_task()`` never waits on the network for a task without an idempotency key: the
record goes to the write buffer (``pending``). A keyed task needs the store's answer
(is the key taken?), so it makes one synchronous, atomic ``create`` through the bridge.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from starlette.background import BackgroundTask

from .config import DEFAULT_QUEUE, TaskConfig, check_priority, check_tags
from .encoding import encode_arguments
from .errors import EagerDispatchError, InvalidTaskError, QueueFullError, TaskArgumentError
from .invocation import BACKGROUND, EAGER, QUEUED
from .limits import check_arguments, check_idempotency_key, surrogate_error
from .models import (
    CreateResult,
    LiveRecord,
    TaskRecord,
    TaskStatus,
    construct,
    copy_with,
)
from .protocols import TaskBackend
from .registry import unrecoverable_reason
from .task_ids import new_task_id

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["accept", "new_record", "request_tasks"]

logger = logging.getLogger("fastapi_taskflow")


def new_record(
    engine: Engine,
    config: TaskConfig,
    args: list[Any] | None,
    kwargs: dict[str, Any] | None,
    *,
    tags: dict[str, str],
    priority: int | None,
    idempotency_key: str | None = None,
) -> TaskRecord:
    """The PENDING record of a new task of ``config`` with its encoded arguments.

    On a durable backend this instance is its owner from the start: if it dies before the
    task finishes, another instance adopts it (see ``recovery``).

    Every value must be checked already (``check_tags``, ``encode_arguments``, ...): the
    record is built without a second validation.
    """
    now = engine.clock.now()
    return construct(
        TaskRecord,
        task_id=new_task_id(),
        func_name=config.name,
        queue=config.queue or DEFAULT_QUEUE,
        priority=priority or 0,
        args=args,
        kwargs=kwargs,
        tags=tags,
        idempotency_key=idempotency_key,
        max_retries=config.retries,
        requeue_on_interrupt=config.requeue_on_interrupt,
        created_at=now,
        updated_at=now,
        owner=engine.instance_id if engine.durable else None,
    )


request_tasks: ContextVar[set[str] | None] = ContextVar("taskflow_request_tasks", default=None)
"""The ids accepted during the current request (set by ``install()``'s middleware)."""

_PENDING = TaskStatus.PENDING

_PLAIN = frozenset({str, int, float, bool, type(None)})
"""Argument types whose JSON form is the value itself."""


def accept(
    engine: Engine,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    idempotency_key: str | None,
    tags: dict[str, str] | None,
    eager: bool | None,
    priority: int | None,
    sink: list[BackgroundTask] | None,
) -> str:
    """Record a new task and route it; return its id (see the module docstring).

    ``sink`` is the background task list to append to; None means the task goes to
    its queue (``task_manager.add_task``).
    """
    if not callable(func):
        raise InvalidTaskError(f"add_task() needs a callable as its first argument, got {func!r}")
    if idempotency_key is not None:
        if not isinstance(idempotency_key, str):
            raise InvalidTaskError(
                f"idempotency_key must be a string, got {type(idempotency_key).__name__}"
            )
        check_idempotency_key(idempotency_key)
    if eager is not None and not isinstance(eager, bool):
        raise InvalidTaskError(f"eager must be True, False or None, got {eager!r}")
    if priority is not None:
        check_priority(priority)
    clean_tags = check_tags(tags) if tags is not None else None
    availability = engine.availability
    if not availability.available:
        availability.check()
    engine.check_opened()  # an in-process store would take the record, though never opened
    entry = engine.registry.resolve(func)
    config = entry.config
    effective_priority = priority if priority is not None else config.priority
    if sink is None or effective_priority is not None or config.queue is not None:
        route = QUEUED
    elif eager if eager is not None else config.eager:
        route = EAGER
    else:
        route = BACKGROUND
    durable = engine.durable
    create_now = engine.create_now
    plain = not kwargs and (not args or all(type(arg) in _PLAIN for arg in args))
    args_json: list[Any] | None
    kwargs_json: dict[str, Any] | None
    if plain:  # what encode_arguments returns for str, int, float, bool and None
        # (an in-process store keeps the call's own tuple and no empty dict: nothing to
        # build)
        args_json, kwargs_json = (None, None) if create_now is not None else (list(args), {})
    else:
        try:
            args_json, kwargs_json = encode_arguments(func, args, kwargs, strict=durable)
        except TaskArgumentError as exc:
            raise surrogate_error(exc) or exc from exc.__cause__
    if durable:
        check_arguments(func, args_json, kwargs_json)
        if not entry.registered:
            _warn_if_unrecoverable(engine, config.name)
    record: TaskRecord | LiveRecord
    if create_now is not None:
        # new_record() for a store in this process (``InProcessStore``): the LiveRecord
        # it keeps as it is. The positional arguments are kept as a tuple (the store
        # hands out a list), which the garbage collector can leave alone: the call's
        # own when they are plain values (immutable), else their JSON form's. No tags
        # and no keyword arguments: the record's are one shared empty mapping.
        # By position (see LiveRecord): every parameter up to requeue_on_interrupt.
        record = LiveRecord(
            new_task_id(),
            config.name,
            engine.clock.now(),
            _PENDING,  # status
            config.queue or DEFAULT_QUEUE,  # queue
            effective_priority or 0,  # priority
            args if plain else tuple(args_json or ()),  # args
            kwargs_json,  # kwargs
            clean_tags,  # tags
            idempotency_key,  # idempotency_key
            0,  # attempt
            config.retries,  # max_retries
            config.requeue_on_interrupt,  # requeue_on_interrupt
        )
    else:
        record = new_record(
            engine,
            config,
            args_json,
            kwargs_json,
            tags=clean_tags or {},  # a dict of its own: observers get this record
            priority=effective_priority,
            idempotency_key=idempotency_key,
        )
    # The loop to start on, to flush on, to queue on: not needed by a background task
    # an in-process store takes at once.
    loop = None if route == BACKGROUND and create_now is not None else engine.dispatch_loop()
    if route == EAGER and loop is None:
        raise EagerDispatchError(
            "eager=True needs a running event loop to start the task on, and none is "
            "running: call add_task() from a route or under `async with task_manager:`, "
            "or drop eager=True so the task runs after the response."
        )
    queue = record.queue
    if route == QUEUED and not _has_room(engine, queue):
        holder = _key_holder(engine, idempotency_key)
        if holder is not None:
            return holder  # the key's task exists: a duplicate needs no room
        _reject(engine, record, loop)
    task_id = record.task_id
    invocation = engine.register_invocation(
        record, func, args, kwargs, config, route, is_async=entry.is_async
    )
    if idempotency_key is not None or (create_now is None and loop is None):
        existing: TaskRecord | LiveRecord | None
        if create_now is not None:
            existing = create_now(record)
        else:
            # Written before add_task() returns: a keyed create needs the store's answer,
            # and with no event loop to write the buffer (a script, code run before the
            # manager starts) so does an id that must name a stored task (a queued one
            # on its queue, for any instance) even if this process ends next.
            assert isinstance(record, TaskRecord)
            existing = _create_now(engine, record, queued=route == QUEUED and durable)
        if existing is not None:
            engine.forget(task_id)
            return existing.task_id
    elif create_now is not None:
        create_now(record)
    else:
        assert isinstance(record, TaskRecord) and loop is not None
        engine.pending.add(record)
        engine.schedule_flush(loop)
    accepted = request_tasks.get()  # the current request's, if install() tracks it
    if accepted is not None:
        accepted.add(task_id)
    if route == BACKGROUND:
        assert sink is not None
        sink.append(invocation)
    elif route == QUEUED:
        engine.tasks.wait_in_queue(task_id, queue)
        engine.submit_soon(loop, task_id, queue, record.priority)
    else:
        assert loop is not None
        engine.spawn_on(loop, engine.run_now(task_id))
    return task_id


def _create_now(engine: Engine, record: TaskRecord, *, queued: bool) -> TaskRecord | None:
    """Create ``record`` through the bridge before ``add_task()`` returns; return the
    task that already holds its key, if one does. If the store cannot take it, the task
    is forgotten (nothing of it stays accepted) and the error propagates."""
    try:
        result = engine.bridge.run(lambda backend: _create_keyed(engine, backend, record, queued))
    except BaseException:
        engine.forget(record.task_id)
        raise
    return None if result.created else result.record


async def _create_keyed(
    engine: Engine, backend: TaskBackend, record: TaskRecord, enqueue: bool
) -> CreateResult:
    """Create atomically by key; a durable queued task is put on its queue before
    ``add_task()`` returns (see ``write_hooks.enqueue_batch``)."""

    async def create() -> CreateResult:
        result = await backend.create(record)
        if enqueue and result.created:
            await backend.enqueue(record.task_id, queue=record.queue, priority=record.priority)
            engine.tasks.mark_enqueued([record.task_id])
        return result

    return await engine.availability.call(create)


def _warn_if_unrecoverable(engine: Engine, name: str) -> None:
    """Warn once per name about a function no other instance can run after a crash."""
    why = unrecoverable_reason(name)
    if why is None or name in engine.warned_names:
        return
    engine.warned_names.add(name)
    logger.warning(
        "task function %r cannot be recovered by another instance: %s. If this process "
        "dies before the task finishes, the task ends FAILED. Define it at module level "
        "and register it with @task_manager.task() to make it durable.",
        name,
        why,
    )


def _has_room(engine: Engine, queue: str) -> bool:
    limit = engine.queue_config(queue).max_size
    return limit is None or engine.tasks.waiting_in(queue) < limit


def _key_holder(engine: Engine, idempotency_key: str | None) -> str | None:
    if idempotency_key is None:
        return None
    found = engine.bridge.run(lambda backend: backend.find_by_key(idempotency_key))
    return found.task_id if found is not None else None


def _reject(
    engine: Engine,
    record: TaskRecord | LiveRecord,
    loop: asyncio.AbstractEventLoop | None,
) -> None:
    limit = engine.queue_config(record.queue).max_size or 0
    rejected_fields = {
        "status": TaskStatus.REJECTED,
        "finished_at": record.created_at,
        "error": f"queue {record.queue!r} is full",
    }
    snapshot = record.to_record() if isinstance(record, LiveRecord) else record
    rejected = copy_with(snapshot, rejected_fields)
    if engine.create_now is not None:
        engine.create_now(rejected)
    elif record.idempotency_key is not None:
        engine.bridge.run(
            lambda backend: engine.availability.call(lambda: backend.create(rejected))
        )
    else:
        engine.pending.add(rejected)
        if loop is not None:
            engine.schedule_flush(loop)
    if loop is not None:
        engine.spawn_on(loop, engine.emit_lifecycle(rejected))
    raise QueueFullError(record.queue, limit, record.task_id)
