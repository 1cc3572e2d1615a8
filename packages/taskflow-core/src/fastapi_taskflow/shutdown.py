"""Graceful shutdown: stop claiming, let running tasks finish, hand the rest back."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from . import supervision
from .models import TaskStatus

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["shutdown"]

logger = logging.getLogger("fastapi_taskflow")

_PAGE = 100
"""How many owned tasks ``_hand_back`` lists at first."""


async def shutdown(engine: Engine, timeout: float) -> None:
    """Stop taking work, give running tasks ``timeout`` seconds, interrupt the rest,
    hand unstarted tasks back to the queue, and release resources."""
    runtime = engine.current_runtime
    if runtime is None or runtime.loop is not asyncio.get_running_loop():
        engine.bridge.close()
        return
    runtime.stopping = True
    # A store that never answered since boot holds nothing of this instance's: every
    # task was refused, and there is no heartbeat to delete.
    opened = engine.store_opened
    for worker in list(runtime.workers.values()):
        await worker.stop()
    try:
        await asyncio.wait_for(engine.flush(), timeout=max(timeout, 1.0))
    except Exception:
        logger.exception("could not write accepted tasks at shutdown")
    running = list(runtime.running.values())
    if running:
        _, late = await asyncio.wait(running, timeout=timeout)
        if late:
            supervision.stop_threads(engine.cancel_scopes)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=5)
    if engine.durable and opened:
        await _hand_back(engine)
    for task in list(runtime.background):
        task.cancel()
    await asyncio.gather(*runtime.background, return_exceptions=True)
    if engine.durable and opened:
        await _forget_me(engine)
    # Writes whose callers gave up (tasks cancelled above) end before the store closes.
    await engine.drain_writes(timeout=max(timeout, 1.0))
    await engine.hub.drain(timeout=max(timeout, 1.0))
    await engine.hub.withdraw(timeout=max(timeout, 1.0))
    engine.bridge.close()
    await runtime.close_backends()
    engine.stopped()


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
