"""What a failed attempt records: a traceback a reader can follow, made without
reading source files."""

from __future__ import annotations

import traceback
from typing import Any

import pytest

from fastapi_taskflow import TaskManager, TaskStatus
from fastapi_taskflow.failure import format_traceback


class LookupFailed(Exception):
    pass


def _load(key: str) -> None:
    raise KeyError(key)


def _lookup(key: str) -> None:
    try:
        _load(key)
    except KeyError as exc:
        raise LookupFailed(f"no row for {key}") from exc


@pytest.mark.anyio
async def test_a_failed_attempt_logs_every_frame_and_the_cause(eventually: Any) -> None:
    tm = TaskManager(poll_interval=0.01)

    @tm.task()
    async def sync_user(key: str) -> None:
        _lookup(key)

    async with tm:
        task_id = tm.add_task(sync_user, "u1")
        await eventually(lambda: tm.store.get(task_id).status is TaskStatus.FAILED)  # type: ignore[union-attr]
    record = tm.store.get(task_id)
    assert record is not None
    [entry] = [e for e in record.logs if e.level == "error"]
    text = entry.extra["traceback"]
    assert text.startswith("Traceback (most recent call last):\n")
    cause, _, effect = text.partition(
        "\nThe above exception was the direct cause of the following exception:\n\n"
    )
    assert f'File "{__file__}", line ' in cause and "in _load\n" in cause
    assert cause.rstrip().endswith("KeyError: 'u1'")
    for frame in ("in sync_user\n", "in _lookup\n"):
        assert frame in effect
    assert effect.rstrip().endswith(f"{__name__}.LookupFailed: no row for u1")


def test_same_text_as_the_standard_library_where_no_source_is_shown() -> None:
    """Code without a source file: the standard library prints no source lines either,
    so the two must agree exactly (chaining, context, notes included)."""
    namespace: dict[str, Any] = {}
    exec(
        compile(
            "def inner():\n"
            "    raise ValueError('bad value')\n"
            "def outer():\n"
            "    try:\n"
            "        inner()\n"
            "    except ValueError:\n"
            "        exc = RuntimeError('while handling')\n"
            "        exc.add_note('a note')\n"
            "        raise exc\n"
            "def catch():\n"
            "    try:\n"
            "        outer()\n"
            "    except RuntimeError as exc:\n"
            "        return exc\n",
            "<generated>",
            "exec",
        ),
        namespace,
    )
    exc = namespace["catch"]()
    assert isinstance(exc, RuntimeError)
    assert format_traceback(exc) == "".join(traceback.format_exception(exc))
