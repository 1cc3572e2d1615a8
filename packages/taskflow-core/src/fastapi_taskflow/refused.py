"""Tasks the store refused to create: each fails alone, visibly, and blocks nothing.

``add_task()`` checks every documented limit first (:mod:`fastapi_taskflow.limits`), so
a refusal here means the store refused something those checks did not foresee. The
refused task leaves the write buffer (later flushes never retry it), this process
forgets it (it never runs), and a FAILED record saying why is written in its place
(with what the store cannot hold replaced; without its arguments when the store refuses
those too), so ``store.get(task_id)`` tells the caller what happened. The request that
accepted it, if any, is answered with an error by ``install()``'s middleware; other
requests are unaffected.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from .errors import BackendUnavailableError
from .limits import clean_json, clean_text
from .models import TaskRecord, TaskStatus
from .protocols import TaskBackend
from .runtime import reraise_if_cancelled

__all__ = ["RefusedTasks", "record_refusals"]

logger = logging.getLogger("fastapi_taskflow")

_UNSTORED = "its arguments could not be stored either"


class RefusedTasks:
    """The most recent refusals by task id, for the requests that accepted them."""

    def __init__(self, keep: int = 10_000) -> None:
        self._keep = keep
        self._errors: OrderedDict[str, str] = OrderedDict()

    def add(self, task_id: str, error: str) -> None:
        """Remember that ``task_id`` was refused with ``error``."""
        self._errors[task_id] = error
        while len(self._errors) > self._keep:
            self._errors.popitem(last=False)

    def pop(self, task_id: str) -> str | None:
        """Return and forget the refusal of ``task_id``, or None."""
        return self._errors.pop(task_id, None)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._errors


def failed_copy(record: TaskRecord, error: str) -> TaskRecord:
    """Return ``record`` as FAILED with ``error``, every stored text made storable."""
    args, _ = clean_json(record.args)
    kwargs, _ = clean_json(record.kwargs)
    tags = {clean_text(k)[0]: clean_text(v)[0] for k, v in record.tags.items()}
    return record.model_copy(
        update={
            "status": TaskStatus.FAILED,
            "finished_at": record.created_at,
            "error": clean_text(error)[0],
            "args": args,
            "kwargs": kwargs,
            "tags": tags,
            "func_name": clean_text(record.func_name)[0],
            "queue": clean_text(record.queue)[0],
            "idempotency_key": None,
        }
    )


async def record_refusals(
    seen: RefusedTasks,
    forget: Callable[[str], None],
    announce: Callable[[TaskRecord], Awaitable[None]],
    backend: TaskBackend,
    refused: list[tuple[TaskRecord, Exception]],
) -> None:
    """Fail each refused task alone: note it in ``seen``, ``forget`` it here, store a
    FAILED record instead and ``announce`` that."""
    for record, exc in refused:
        task_id = record.task_id
        reason = f"{type(exc).__name__}: {exc}"
        error = f"the task store refused this task, so it never ran ({reason})"
        seen.add(task_id, error)
        forget(task_id)
        logger.error(
            "task %s (%s) was refused by the task store: %s", task_id, record.func_name, reason
        )
        failed = failed_copy(record, error)
        try:
            try:
                await backend.create(failed)
            except BackendUnavailableError:
                raise
            except Exception:
                reraise_if_cancelled()
                # What the store refused may be the arguments themselves (too large):
                # the FAILED record then goes without them.
                failed = failed.model_copy(
                    update={"args": None, "kwargs": None, "error": f"{error}; {_UNSTORED}"}
                )
                await backend.create(failed)
        except Exception:
            reraise_if_cancelled()
            logger.exception("storing refused task %s as FAILED failed too", task_id)
            continue
        await announce(failed)
