"""Running a task this process did not accept: its invocation from the stored record."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .encoding import decode_arguments, has_unstored
from .invocation import QUEUED, Invocation
from .models import Claim, TaskStatus, TaskUpdate

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["rehydrate"]

logger = logging.getLogger("fastapi_taskflow")


async def rehydrate(engine: Engine, claim: Claim) -> Invocation | None:
    """Rebuild the invocation of a claimed task accepted elsewhere, from its stored record.

    Returns None (and lets go of the task) when it is no longer PENDING; when this
    instance lacks its function (it goes back on the queue for an instance that has it,
    with a warning logged once per name); or when the stored arguments no longer fit the
    function's signature (the task FAILS with that reason).
    """
    record = await engine.availability.persist(lambda: engine.backend.get(claim.task_id))
    if record is None or record.status is not TaskStatus.PENDING:
        await engine.leases.release(claim.task_id)
        return None
    entry = engine.registry.by_name(record.func_name)
    if entry is None or record.args is None or has_unstored(record.args, record.kwargs):
        if record.func_name not in engine.warned_names:
            engine.warned_names.add(record.func_name)
            logger.warning(
                "task %s needs %r, which %s on this instance (%s); it stays PENDING for "
                "an instance that can run it",
                record.task_id,
                record.func_name,
                "is not registered"
                if entry is None
                else "has arguments kept in memory by the process that accepted it",
                engine.instance_id,
            )
        await engine.requeue(record, delay=max(engine.poll_interval * 5, 1.0), wake=False)
        await engine.leases.release(claim.task_id)
        return None
    try:
        args, kwargs = decode_arguments(entry.func, record.args, record.kwargs or {})
    except Exception as exc:
        failed = await engine.backend.transition(
            record.task_id,
            expected={TaskStatus.PENDING},
            new=TaskStatus.FAILED,
            update=TaskUpdate(
                finished_at=engine.clock.now(), error=f"stored arguments do not fit: {exc}"
            ),
        )
        if failed is not None:
            await engine.emit_lifecycle(failed)
        await engine.leases.release(claim.task_id)
        return None
    return Invocation(
        entry.func,
        args,
        kwargs,
        entry.config,
        record.queue,
        record.priority,
        QUEUED,
        attempts=record.attempt,
    )
