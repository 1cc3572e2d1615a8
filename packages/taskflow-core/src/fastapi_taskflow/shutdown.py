"""Graceful shutdown: stop claiming, let running tasks finish, hand the rest back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from . import supervision
from .models import TaskStatus
from .runtime import within

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["CLEANUP_SECONDS", "shutdown"]

logger = logging.getLogger("fastapi_taskflow")

CLEANUP_SECONDS = 5.0
"""How long a shutdown takes at most after the running tasks' time (``timeout``): for
the interrupted tasks' outcomes, handing the unstarted tasks back, deleting the
heartbeat and the writes still in flight, all together."""

_PAGE = 100
"""How many owned tasks ``_hand_back`` lists at first."""


async def shutdown(engine: Engine, timeout: float) -> None:
    """Stop taking work, give running tasks ``timeout`` seconds, interrupt the rest,
    hand unstarted tasks back to the queue, and release resources.

    Returns within ``timeout`` + :data:`CLEANUP_SECONDS` seconds, whatever the store
    does: every step after the running tasks' time (their outcomes, the hand-back, the
    heartbeat, the writes in flight) shares the cleanup time, and what is still waiting
    for the store when it runs out is cancelled."""
    runtime = engine.current_runtime
    if runtime is None or runtime.loop is not asyncio.get_running_loop():
        engine.bridge.close()
        return
    loop = runtime.loop
    started_at = loop.time()
    deadline = started_at + max(timeout, 0.0)
    end = deadline + CLEANUP_SECONDS

    def left(until: float) -> float:
        return max(until - loop.time(), 0.0)

    runtime.stopping = True
    # A store that never answered since boot holds nothing of this instance's: every
    # task was refused, and there is no heartbeat to delete.
    opened = engine.store_opened
    for worker in list(runtime.workers.values()):
        await worker.stop()
    try:
        # the running tasks go on meanwhile: this is their time too
        await within(left(max(deadline, started_at + 1.0)), engine.flush())
    except Exception:
        logger.exception("could not write accepted tasks at shutdown")
    running = list(runtime.running.values())
    if running:
        _, late = await asyncio.wait(running, timeout=left(deadline))
        if late:
            supervision.stop_threads(engine.cancel_scopes)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=left(end))
    if engine.durable and opened:
        await _within(left(end), _hand_back(engine), "handing the unstarted tasks back")
    await runtime.stop_background(timeout=left(end))
    if engine.durable and opened:
        await _within(left(end), _forget_me(engine), "deleting this instance's heartbeat")
    # Writes whose callers gave up (tasks cancelled above) end before the store closes.
    await engine.drain_writes(timeout=left(end))
    await engine.hub.drain(timeout=left(end))
    await engine.hub.withdraw(timeout=left(end))
    engine.bridge.close()
    await runtime.close_backends()
    engine.stopped()


async def _within(seconds: float, step: Coroutine[Any, Any, None], what: str) -> None:
    """Run ``step`` for at most ``seconds``, then cancel it."""
    try:
        await within(seconds, step)
    except (TimeoutError, asyncio.TimeoutError):
        logger.warning(
            "shutdown: gave up %s when the cleanup time ran out; other instances adopt "
            "what this instance still owns after liveness_seconds",
            what,
        )


async def _hand_back(engine: Engine) -> None:
    """Queue this instance's unstarted tasks and give up their ownership, so another
    instance starts them at once.

    The store says what this instance owns (``Store.owned``). What cannot be handed back
    now (the store is down) stays owned by this instance, whose heartbeat stops: the other
    instances adopt it after ``liveness_seconds``.
    """
    backend, me = engine.backend, engine.instance_id
    try:
        seen: set[str] = set()
        limit = _PAGE
        while True:
            # ``owned`` lists the oldest first and has no offset: tasks handed back
            # leave the list, the ones left (still RUNNING) stay in it, so a page of
            # nothing new is looked past with a larger one.
            listed = await backend.owned(me, limit=limit)
            fresh = [task_id for task_id in listed if task_id not in seen]
            for task_id in fresh:
                seen.add(task_id)
                record = await backend.get(task_id)
                if record is None or record.status is not TaskStatus.PENDING:
                    continue  # RUNNING: its INTERRUPTED could not be written
                await backend.enqueue(task_id, queue=record.queue, priority=record.priority)
                await engine.release(task_id)
            if len(listed) < limit:
                break  # every task this instance owns was listed
            if not fresh:
                limit *= 2
    except Exception:
        logger.warning(
            "could not hand this instance's unstarted tasks back; other instances adopt "
            "them after liveness_seconds",
            exc_info=True,
        )


async def _forget_me(engine: Engine) -> None:
    """Delete this instance's heartbeat (its loop is stopped): what it still owns is
    adopted by the other instances after ``liveness_seconds``."""
    try:
        await engine.control_backend.forget_instance(engine.instance_id)
    except Exception:
        logger.debug("could not delete this instance's heartbeat", exc_info=True)
