"""Graceful shutdown: stop claiming, let running tasks finish, hand the rest back."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["shutdown"]

logger = logging.getLogger("fastapi_taskflow")


async def shutdown(engine: Engine, timeout: float) -> None:
    """Stop taking work, give running tasks ``timeout`` seconds, interrupt the rest,
    hand unstarted tasks back to the queue, and release resources."""
    runtime = engine.current_runtime
    if runtime is None or runtime.loop is not asyncio.get_running_loop():
        engine.bridge.close()
        return
    runtime.stopping = True
    for worker in list(runtime.workers.values()):
        await worker.stop()
    try:
        await asyncio.wait_for(engine.flush(), timeout=max(timeout, 1.0))
    except Exception:
        logger.exception("could not write accepted tasks at shutdown")
    running = list(runtime.running.values())
    if running:
        _, late = await asyncio.wait(running, timeout=timeout)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=5)
    if engine.durable:
        await _hand_back(engine)
    for task in list(runtime.background):
        task.cancel()
    await asyncio.gather(*runtime.background, return_exceptions=True)
    engine.bridge.close()
    await engine.close_control()
    await engine.backend.close()
    engine.stopped()


async def _hand_back(engine: Engine) -> None:
    """Queue this instance's unstarted tasks and drop their leases, so another
    instance starts them at once."""
    for task_id in list(engine.leases.held):
        invocation = engine.invocations.get(task_id)
        try:
            if invocation is not None:
                await engine.backend.enqueue(
                    task_id, queue=invocation.queue, priority=invocation.priority
                )
            await engine.backend.release_lease(task_id, owner=engine.instance_id)
        except Exception:
            logger.warning("could not hand task %s back; its lease will expire", task_id)
        engine.leases.held.discard(task_id)
