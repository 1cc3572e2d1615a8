"""What a failed attempt records: a traceback a reader can follow, made without
reading source files."""

from __future__ import annotations

import sys
import traceback
from typing import Any

import pytest

from fastapi_taskflow import TaskManager, TaskStatus
from fastapi_taskflow.failure import describe, format_traceback
from fastapi_taskflow.limits import ERROR_TEXT_MAX


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


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception notes are Python 3.11's")
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


if sys.version_info >= (3, 11):
    from builtins import ExceptionGroup

needs_groups = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="exception groups are built in from Python 3.11"
)

GROUPS = compile(
    "def fail(kind, n):\n"
    "    raise kind(f'member {n}')\n"
    "def caught(kind, n):\n"
    "    try:\n"
    "        fail(kind, n)\n"
    "    except Exception as exc:\n"
    "        return exc\n"
    "def chained(n):\n"
    "    try:\n"
    "        fail(KeyError, n)\n"
    "    except KeyError as exc:\n"
    "        try:\n"
    "            raise RuntimeError(f'lookup {n} failed') from exc\n"
    "        except RuntimeError as effect:\n"
    "            return effect\n"
    "def group(message, members):\n"
    "    try:\n"
    "        raise ExceptionGroup(message, members)\n"
    "    except ExceptionGroup as exc:\n"
    "        return exc\n",
    "<generated>",
    "exec",
)


def _generated() -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(GROUPS, namespace)
    return namespace


@needs_groups
def test_an_exception_group_shows_every_member_as_the_standard_library_does() -> None:
    """``asyncio.TaskGroup`` and anyio raise exception groups: the text shows each
    member (its frames, its cause, groups nested in it) in Python's layout, the same
    text as the standard library's where no source is shown."""
    g = _generated()
    inner = g["group"]("inner", [g["caught"](TypeError, 3), ValueError("no traceback")])
    inner.add_note("a note on the inner group")
    outer = g["group"]("outer", [g["caught"](ValueError, 1), g["chained"](2), inner])
    text = format_traceback(outer)
    assert text == "".join(traceback.format_exception(outer))
    for shown in ("ValueError: member 1", "KeyError: 'member 2'", "TypeError: member 3"):
        assert shown in text
    assert "RuntimeError: lookup 2 failed" in text and "in fail\n" in text


@needs_groups
def test_a_wide_or_deep_group_is_cut_where_the_standard_library_cuts_it() -> None:
    g = _generated()
    wide = g["group"]("wide", [g["caught"](ValueError, n) for n in range(20)])
    assert format_traceback(wide) == "".join(traceback.format_exception(wide))
    assert "and 5 more exceptions" in format_traceback(wide)
    deep: BaseException = ValueError("bottom")
    for level in range(13):
        deep = ExceptionGroup(f"level {level}", [deep])
    assert format_traceback(deep) == "".join(traceback.format_exception(deep))
    assert "max_group_depth" in format_traceback(deep)
    caused = g["group"]("caused", [ValueError("x")])
    caused.__cause__ = g["chained"](4)
    assert format_traceback(caused) == "".join(traceback.format_exception(caused))


@pytest.mark.anyio
@needs_groups
async def test_a_task_failing_in_a_task_group_records_why(eventually: Any) -> None:
    import asyncio

    tm = TaskManager(poll_interval=0.01)

    async def fetch(key: str) -> None:
        _load(key)

    @tm.task()
    async def sync_all() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(fetch("u7"))

    async with tm:
        task_id = tm.add_task(sync_all)
        await eventually(lambda: tm.store.get(task_id).status is TaskStatus.FAILED)  # type: ignore[union-attr]
    record = tm.store.get(task_id)
    assert record is not None
    [entry] = [e for e in record.logs if e.level == "error"]
    text = entry.extra["traceback"]
    assert "ExceptionGroup: unhandled errors in a TaskGroup (1 sub-exception)" in text
    assert "    | KeyError: 'u7'\n" in text and "in _load\n" in text
    # the one-line error (the dashboard's, the log line's) names the error inside too
    expected = "ExceptionGroup: unhandled errors in a TaskGroup (1 sub-exception) [KeyError: 'u7']"
    assert record.error == expected
    assert entry.message == f"attempt 1 failed: {expected}"


@needs_groups
def test_the_error_line_of_a_group_names_the_errors_in_it() -> None:
    assert describe(ValueError("bad row")) == "ValueError: bad row"
    nested = ExceptionGroup(
        "outer", [ValueError("bad row"), ExceptionGroup("inner", [KeyError("id")])]
    )
    assert describe(nested) == (
        "ExceptionGroup: outer (2 sub-exceptions) [ValueError: bad row; KeyError: 'id']"
    )
    wide = ExceptionGroup("wide", [ValueError(n) for n in range(5)])
    assert describe(wide) == (
        "ExceptionGroup: wide (5 sub-exceptions) "
        "[ValueError: 0; ValueError: 1; ValueError: 2; 2 more]"
    )


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("this exception cannot be printed")


class NotText(Exception):
    def __str__(self) -> Any:
        return 42


@pytest.mark.anyio
async def test_an_exception_that_cannot_be_printed_fails_its_task_and_no_other(
    one_request: Any,
) -> None:
    """An exception whose ``__str__`` raises (or returns something that is not text) is
    recorded as Python's own traceback prints it; the task ends FAILED (it stayed
    RUNNING for ever) and the tasks after it in the same request still run (the
    request's whole list was abandoned)."""
    tm = TaskManager()
    ran: list[str] = []

    @tm.task(retries=1)
    async def unprintable() -> None:
        raise Unprintable()

    @tm.task()
    async def not_text() -> None:
        raise NotText()

    @tm.task()
    async def after() -> None:
        ran.append("after")

    first, second, third = await one_request(tm, unprintable, not_text, after)
    assert (first.status, first.attempt) == (TaskStatus.FAILED, 2)
    assert first.error == "Unprintable: <exception str() failed>"
    assert second.status is TaskStatus.FAILED
    assert second.error == "NotText: <exception str() failed>"
    [*_, entry] = [e for e in first.logs if e.level == "error"]
    assert entry.extra["traceback"].endswith(f"{__name__}.Unprintable: <exception str() failed>\n")
    assert third.status is TaskStatus.SUCCESS and ran == ["after"]


@pytest.mark.anyio
async def test_a_huge_exception_message_is_recorded_cut(one_request: Any) -> None:
    """A message of a megabyte (a payload or an HTML page put in an exception) is cut at
    ``ERROR_TEXT_MAX`` characters in the error, the log line and the traceback, saying
    how much was left out: every task list carries the error."""
    tm = TaskManager()
    message = "x" * 1_000_000

    @tm.task()
    async def upload() -> None:
        raise ValueError(message)

    [record] = await one_request(tm, upload)
    assert record.error is not None
    left_out = f"... [{1_000_000 - ERROR_TEXT_MAX} more characters not recorded]"
    assert record.error == f"ValueError: {'x' * ERROR_TEXT_MAX}{left_out}"
    [entry] = [e for e in record.logs if e.level == "error"]
    assert entry.message == f"attempt 1 failed: {record.error}"
    assert entry.extra["traceback"].endswith(f"ValueError: {'x' * ERROR_TEXT_MAX}{left_out}\n")
