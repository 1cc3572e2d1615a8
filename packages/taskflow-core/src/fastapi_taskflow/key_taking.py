"""The checks every store makes the same way for ``transition(..., take_key=True)``.

A transition that takes an idempotency key back (an operator retry of a FAILED task)
must move the task to a status that holds the key, and the task must have a key. Both
are caller mistakes, refused before anything is written, with the same message on every
backend.
"""

from __future__ import annotations

from .errors import InvalidOperationError
from .models import KEY_RELEASING_STATUSES, TaskStatus

__all__ = ["check_take_key", "keyless_error"]


def check_take_key(new: TaskStatus) -> None:
    """Refuse ``take_key=True`` towards a status that releases the key.

    Raises:
        InvalidOperationError: ``new`` is FAILED or REJECTED (a task there holds no key).
    """
    if TaskStatus(new) in KEY_RELEASING_STATUSES:
        raise InvalidOperationError(
            f"take_key=True needs a status that holds the idempotency key, not "
            f"{TaskStatus(new).value.upper()}; pass take_key=False for that transition"
        )


def keyless_error(task_id: str) -> InvalidOperationError:
    """The error for ``take_key=True`` on a task that has no idempotency key."""
    return InvalidOperationError(
        f"task {task_id} has no idempotency key to take back; pass take_key=True only for "
        "a task created with idempotency_key="
    )
