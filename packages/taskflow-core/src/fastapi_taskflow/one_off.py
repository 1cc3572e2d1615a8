"""One-off schedules: ``await task_manager.schedule_once(func, ..., run_at=... | delay=...)``.

A one-off firing is a PENDING task record put on its queue with ``not_before=run_at``:
it lives in the backend, so it survives restarts and the death of the instance that
armed it, and the queue's claim plus the PENDING → RUNNING compare-and-set make it run
exactly once, on whichever instance claims it when it is due. (On the in-process memory
backend it lives and dies with the process.)

A ``run_key`` names a firing so it can be moved or called off: scheduling the same key
again cancels the pending firing and arms the new one (the old record stays, CANCELLED,
in the history); ``cancel_scheduled(run_key)`` cancels it. Both hold a backend lock on
the key, so two instances moving one key at once leave exactly one pending firing.
The key, the due time and a ``once`` marker are stored as tags (``taskflow.run_key``,
``taskflow.run_at``, ``taskflow.scheduled``); ``list_scheduled()`` reads them back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from .accept import new_record
from .arming import arm
from .cancellation import cancel_pending
from .config import check_tags
from .encoding import encode_arguments
from .errors import InvalidTaskError, ScheduleError, TaskStateError
from .invocation import QUEUED
from .limits import IDEMPOTENCY_KEY_MAX, NAME_MAX, storable_text
from .models import TaskQuery, TaskRecord, TaskStatus

if TYPE_CHECKING:
    from .engine import Engine

__all__ = [
    "RUN_AT_TAG",
    "RUN_KEY_TAG",
    "SCHEDULED_TAG",
    "ScheduledTask",
    "cancel_scheduled",
    "list_scheduled",
    "schedule_once",
]

SCHEDULED_TAG = "taskflow.scheduled"
RUN_AT_TAG = "taskflow.run_at"
RUN_KEY_TAG = "taskflow.run_key"

RUN_KEY_MAX = IDEMPOTENCY_KEY_MAX
"""Longest ``run_key``, in characters (as an idempotency key)."""

_LOCK_SECONDS = 30.0


class ScheduledTask(BaseModel):
    """A pending one-off firing, as ``list_scheduled()`` returns it."""

    task_id: str
    func_name: str
    run_at: datetime
    run_key: str | None = None
    tags: dict[str, str]


async def schedule_once(
    engine: Engine,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    run_at: datetime | None,
    delay: timedelta | float | None,
    run_key: str | None,
    tags: dict[str, str] | None,
) -> str:
    """Arm a one-off firing; see :meth:`fastapi_taskflow.TaskManager.schedule_once`."""
    if not callable(func):
        raise InvalidTaskError(f"schedule_once() needs a callable first, got {func!r}")
    if run_key is not None:
        _check_run_key_type(run_key, none=" or None")
        problem = _run_key_problem(run_key)
        if problem is not None:
            raise ScheduleError(problem)
    clean_tags = check_tags(tags)
    await engine.started_backend()  # the store has answered, or BackendUnavailableError
    when = _due_time(engine, run_at, delay)
    config = engine.registry.resolve(func).config
    args_json, kwargs_json = encode_arguments(func, args, kwargs, strict=engine.durable)
    clean_tags.update({SCHEDULED_TAG: "once", RUN_AT_TAG: when.isoformat()})
    if run_key is not None:
        clean_tags[RUN_KEY_TAG] = run_key
    record = new_record(
        engine, config, args_json, kwargs_json, tags=clean_tags, priority=config.priority
    )
    if not engine.durable:
        # In process: the task gets the very objects it was given (nothing is decoded).
        engine.register_invocation(record, func, args, kwargs, config, QUEUED)
    try:
        if run_key is None:
            await arm(engine, record, when)
        else:
            async with _key_lock(engine, run_key):
                await _cancel_keyed(engine, run_key)
                await arm(engine, record, when)
    except BaseException:
        engine.forget(record.task_id)
        raise
    return record.task_id


async def cancel_scheduled(engine: Engine, run_key: str) -> bool:
    """Cancel the pending firing named ``run_key``; True if there was one."""
    _check_run_key_type(run_key)
    if _run_key_problem(run_key) is not None:
        return False  # schedule_once() refuses such a key: no firing has it
    await engine.started_backend()
    async with _key_lock(engine, run_key):
        return await _cancel_keyed(engine, run_key) > 0


async def list_scheduled(engine: Engine) -> list[ScheduledTask]:
    """Every pending one-off firing, soonest first."""
    await engine.started_backend()
    await engine.flush()
    found: list[ScheduledTask] = []
    cursor: str | None = None
    while True:
        page = await engine.backend.query(
            TaskQuery(
                statuses=[TaskStatus.PENDING],
                tags={SCHEDULED_TAG: "once"},
                limit=500,
                cursor=cursor,
            )
        )
        found.extend(_scheduled(record) for record in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    found.sort(key=lambda item: (item.run_at, item.task_id))
    return found


def _scheduled(record: TaskRecord) -> ScheduledTask:
    tags = record.tags
    run_at = datetime.fromisoformat(tags[RUN_AT_TAG]) if RUN_AT_TAG in tags else record.created_at
    return ScheduledTask(
        task_id=record.task_id,
        func_name=record.func_name,
        run_at=run_at,
        run_key=tags.get(RUN_KEY_TAG),
        tags={k: v for k, v in tags.items() if not k.startswith("taskflow.")},
    )


def _due_time(engine: Engine, run_at: datetime | None, delay: timedelta | float | None) -> datetime:
    if (run_at is None) == (delay is None):
        raise ScheduleError(
            "schedule_once() needs exactly one of run_at=datetime(..., tzinfo=...) or "
            "delay=timedelta(...) (or seconds)"
        )
    if run_at is not None:
        if not isinstance(run_at, datetime):
            raise ScheduleError(f"run_at must be a datetime, got {type(run_at).__name__}")
        if run_at.tzinfo is None or run_at.utcoffset() is None:
            raise ScheduleError(
                f"run_at={run_at!r} has no time zone; pass an aware datetime, e.g. "
                "datetime(2030, 1, 1, 9, tzinfo=ZoneInfo('Europe/Paris')) or "
                "datetime.now(timezone.utc) + timedelta(hours=1)"
            )
        try:
            return run_at.astimezone(timezone.utc)
        except OverflowError:  # in UTC it falls before year 1 or after year 9999
            raise ScheduleError(
                f"run_at={run_at!r} is outside the range a datetime holds once converted "
                "to UTC; pass a date between years 1 and 9999 in UTC"
            ) from None
    wanted = delay
    if isinstance(delay, (int, float)) and not isinstance(delay, bool):
        try:
            delay = timedelta(seconds=delay)
        except (ValueError, OverflowError):  # NaN, infinity, past any date
            delay = None
    if not isinstance(delay, timedelta) or delay < timedelta(0):
        raise ScheduleError(f"delay must be a timedelta (or seconds) >= 0, got {wanted!r}")
    try:
        return engine.clock.now() + delay
    except OverflowError:
        raise ScheduleError(
            f"delay={wanted!r} is past the last date a datetime holds; pass a shorter one"
        ) from None


async def _cancel_keyed(engine: Engine, run_key: str) -> int:
    """Cancel every pending firing named ``run_key``; return how many."""
    backend = engine.backend
    await engine.flush()
    page = await engine.availability.call(
        lambda: backend.query(
            TaskQuery(statuses=[TaskStatus.PENDING], tags={RUN_KEY_TAG: run_key}, limit=100)
        )
    )
    cancelled = 0
    for record in page.items:
        if await cancel_pending(engine, backend, record) is not None:
            cancelled += 1
    return cancelled


def _check_run_key_type(run_key: object, *, none: str = "") -> None:
    """Raise ``ScheduleError`` unless ``run_key`` is a non-empty string (``none``: what
    else the parameter takes, for the message)."""
    if not isinstance(run_key, str) or not run_key:
        raise ScheduleError(f"run_key must be a non-empty string{none}, got {run_key!r}")


def _run_key_problem(run_key: str) -> str | None:
    """Why no firing can have ``run_key`` (longer than ``RUN_KEY_MAX`` characters, or
    text no store holds), or None when one can."""
    if len(run_key) > RUN_KEY_MAX:
        return (
            f"run_key must be 1 to {RUN_KEY_MAX} characters, got {len(run_key)}; hash a "
            "longer key (for example with hashlib.sha256)"
        )
    if not storable_text(run_key):
        return (
            f"run_key {run_key[:40]!r} contains a NUL character or a lone surrogate; task "
            "stores cannot hold it. Remove it or encode the value."
        )
    return None


def _lock_name(run_key: str) -> str:
    """The backend lock of ``run_key``: its text when the name fits a lock name
    (``NAME_MAX`` characters), else its SHA-256."""
    name = f"taskflow:run_key:{run_key}"
    if len(name) <= NAME_MAX:
        return name
    return "taskflow:run_key#sha256:" + hashlib.sha256(run_key.encode()).hexdigest()


@asynccontextmanager
async def _key_lock(engine: Engine, run_key: str) -> AsyncIterator[None]:
    """Hold the backend lock of ``run_key`` (waiting while another instance holds it)."""
    backend = engine.backend
    name = _lock_name(run_key)
    owner = f"{engine.instance_id}:{uuid.uuid4().hex}"
    deadline = time.monotonic() + _LOCK_SECONDS
    while not await engine.availability.call(
        lambda: backend.acquire_lock(name, owner=owner, ttl_seconds=_LOCK_SECONDS)
    ):
        if time.monotonic() > deadline:
            raise TaskStateError(
                run_key,
                "locked",
                f"run_key {run_key!r} stayed locked by another instance for "
                f"{_LOCK_SECONDS:g}s; try again",
            )
        await asyncio.sleep(0.02)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):  # the lock expires on its own
            await backend.release_lock(name, owner=owner)
