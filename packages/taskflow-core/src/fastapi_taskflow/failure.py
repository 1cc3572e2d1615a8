"""The text recorded for a failed attempt: a traceback formatted once, cheaply.

``traceback.format_exception`` reads every frame's source line (and, since Python 3.11,
parses it to place the ``^^^`` markers): on a task that fails often that costs more than
the task. A failed attempt records file, line and function of every frame — all a reader
needs to find the code — without touching the source files.
"""

from __future__ import annotations

import sys
import traceback

from .limits import ERROR_TEXT_MAX, cut_text

if sys.version_info >= (3, 11):
    from builtins import BaseExceptionGroup
else:  # Python 3.10: the backport anyio depends on there
    from exceptiongroup import BaseExceptionGroup

__all__ = ["describe", "exception_text", "format_traceback"]

_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"
_UNNAMED = frozenset({"builtins", "__main__"})
"""Modules whose exception types are shown without the module's name."""


MAX_GROUP_WIDTH = 15
"""How many members of an exception group are shown; the rest are counted (as Python's
``traceback`` does)."""

MAX_GROUP_DEPTH = 10
"""How deep exception groups nested in groups are shown (as Python's ``traceback``)."""


GROUP_MEMBERS_NAMED = 3
"""How many errors inside an exception group :func:`describe` names; the rest are
counted."""


def describe(exc: BaseException) -> str:
    """The one line recorded as a failed attempt's ``error``: ``Type: message``.

    An exception group's own message says only how many errors it holds ("unhandled
    errors in a TaskGroup (1 sub-exception)"), so the errors in it (those of nested
    groups too) follow in brackets, the first :data:`GROUP_MEMBERS_NAMED` of them:
    ``ExceptionGroup: unhandled errors in a TaskGroup (2 sub-exceptions) [ValueError:
    bad row; KeyError: 'id']``.
    """
    line = f"{type(exc).__name__}: {exception_text(exc)}"
    if not isinstance(exc, BaseExceptionGroup):
        return line
    leaves = _leaves(exc)
    named = "; ".join(
        f"{type(e).__name__}: {exception_text(e)}" for e in leaves[:GROUP_MEMBERS_NAMED]
    )
    more = len(leaves) - GROUP_MEMBERS_NAMED
    return f"{line} [{named}{f'; {more} more' if more > 0 else ''}]"


def exception_text(exc: BaseException) -> str:
    """``str(exc)``, or ``<exception str() failed>`` (as Python's ``traceback`` prints it)
    when the exception's own ``__str__`` raises or returns something that is not text:
    the failure of a task is recorded whatever its exception does. A message longer than
    :data:`~fastapi_taskflow.limits.ERROR_TEXT_MAX` characters (a payload or a whole
    HTML page put in an exception) is cut there, saying how much was left out: it is
    recorded in the task's error, its log line and its traceback, and every task list
    (dashboard, API, CLI) carries the error."""
    try:
        text = str(exc)
    except Exception:
        return "<exception str() failed>"
    return cut_text(text, ERROR_TEXT_MAX)


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The errors in ``group`` that are not groups themselves, depth first."""
    found: list[BaseException] = []
    for member in group.exceptions:
        if isinstance(member, BaseExceptionGroup):
            found += _leaves(member)
        else:
            found.append(member)
    return found


def format_traceback(exc: BaseException) -> str:
    """Return ``exc``'s traceback as text, like ``traceback.format_exception`` but
    without source lines; chained causes and contexts come first, as Python prints
    them, and an exception group shows each of its members (an ``asyncio.TaskGroup``'s
    failures, say) in Python's layout."""
    if (
        exc.__cause__ is None
        and (exc.__context__ is None or exc.__suppress_context__)
        and not isinstance(exc, BaseExceptionGroup)
    ):
        return _frames(exc) + _exception_only(exc)  # no chain, no group: the common case
    printer = _Printer()
    _chain(exc, printer, set())
    return "".join(printer.parts)


class _Printer:
    """The text being made, and where in nested exception groups it is (the margin
    every line gets inside a group)."""

    __slots__ = ("depth", "need_close", "parts")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.depth = 0
        self.need_close = False

    def indent(self) -> str:
        return " " * (2 * self.depth)

    def emit(self, text: str, margin: str = "|") -> None:
        if not self.depth:
            self.parts.append(text)
            return
        prefix = f"{self.indent()}{margin} "
        self.parts.extend(prefix + line for line in text.splitlines(keepends=True))


def _chain(exc: BaseException, printer: _Printer, seen: set[int]) -> None:
    """``exc`` with the exceptions chained to it, the earliest first."""
    chain: list[tuple[BaseException, str]] = []
    current: BaseException | None = exc
    link = ""
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, _CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, _CONTEXT
        else:
            current = None
    for error, link in reversed(chain):
        if isinstance(error, BaseExceptionGroup):
            _group(error, printer, seen)
        else:
            frames = _frames(error)
            if frames:
                printer.emit(frames)
            printer.emit(_exception_only(error))
        if link:
            printer.emit(link)


def _group(group: BaseExceptionGroup[BaseException], printer: _Printer, seen: set[int]) -> None:
    """An exception group: its own traceback, then each member's, framed and indented."""
    if printer.depth > MAX_GROUP_DEPTH:
        printer.emit(f"... (max_group_depth is {MAX_GROUP_DEPTH})\n")
        return
    top = printer.depth == 0
    if top:
        printer.depth += 1
    frames = _frames(group, header="")
    if frames:
        printer.emit(
            "Exception Group Traceback (most recent call last):\n", margin="+" if top else "|"
        )
        printer.emit(frames)
    printer.emit(_exception_only(group))
    members = group.exceptions
    shown = min(len(members), MAX_GROUP_WIDTH + 1)
    printer.need_close = False
    for index in range(shown):
        last = index == shown - 1
        if last:
            printer.need_close = True  # unless a nested group closes the frame itself
        cut = index >= MAX_GROUP_WIDTH
        title = "..." if cut else str(index + 1)
        corner = "+-" if index == 0 else "  "
        printer.parts.append(
            f"{printer.indent()}{corner}+---------------- {title} ----------------\n"
        )
        printer.depth += 1
        if cut:
            more = len(members) - MAX_GROUP_WIDTH
            printer.emit(f"and {more} more exception{'s' if more > 1 else ''}\n")
        else:
            _chain(members[index], printer, seen)
        if last and printer.need_close:
            printer.parts.append(f"{printer.indent()}+------------------------------------\n")
            printer.need_close = False
        printer.depth -= 1
    if top:
        printer.depth = 0


def _frames(error: BaseException, header: str = "Traceback (most recent call last):\n") -> str:
    """``header`` and file, line and function of every frame of ``error``'s traceback;
    empty when it has none."""
    tb = error.__traceback__
    if tb is None:
        return ""
    parts = [header]
    while tb is not None:
        code = tb.tb_frame.f_code
        parts.append(f'  File "{code.co_filename}", line {tb.tb_lineno}, in {code.co_name}\n')
        tb = tb.tb_next
    return "".join(parts)


def _exception_only(error: BaseException) -> str:
    """The last line(s) of a traceback: ``module.Type: message`` and any notes.

    ``traceback.format_exception_only`` builds a whole ``TracebackException`` (walking
    the stack again) for this; only a ``SyntaxError``, whose text shows the bad line,
    is left to it.
    """
    if isinstance(error, SyntaxError):
        return "".join(traceback.format_exception_only(type(error), error))
    kind = type(error)
    module = kind.__module__
    name = kind.__qualname__ if module in _UNNAMED else f"{module}.{kind.__qualname__}"
    text = exception_text(error)
    last = f"{name}: {text}\n" if text else f"{name}\n"
    notes = getattr(error, "__notes__", None)
    if isinstance(notes, (list, tuple)):
        return last + "".join(f"{note}\n" for note in notes)
    return last
