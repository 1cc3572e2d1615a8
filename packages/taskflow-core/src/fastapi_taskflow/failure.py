"""The text recorded for a failed attempt: a traceback formatted once, cheaply.

``traceback.format_exception`` reads every frame's source line (and, since Python 3.11,
parses it to place the ``^^^`` markers): on a task that fails often that costs more than
the task. A failed attempt records file, line and function of every frame — all a reader
needs to find the code — without touching the source files.
"""

from __future__ import annotations

import traceback

__all__ = ["format_traceback"]

_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"
_UNNAMED = frozenset({"builtins", "__main__"})
"""Modules whose exception types are shown without the module's name."""


def format_traceback(exc: BaseException) -> str:
    """Return ``exc``'s traceback as text, like ``traceback.format_exception`` but
    without source lines; chained causes and contexts come first, as Python prints
    them."""
    if exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__):
        return _one(exc)  # no chain: the common case
    chain: list[tuple[BaseException, str]] = []
    seen: set[int] = set()
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
    return "".join(_one(error) + link for error, link in reversed(chain))


def _one(error: BaseException) -> str:
    """The traceback of ``error`` alone (no chained exception)."""
    tb = error.__traceback__
    if tb is None:
        return _exception_only(error)
    parts = ["Traceback (most recent call last):\n"]
    while tb is not None:
        code = tb.tb_frame.f_code
        parts.append(f'  File "{code.co_filename}", line {tb.tb_lineno}, in {code.co_name}\n')
        tb = tb.tb_next
    parts.append(_exception_only(error))
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
    try:
        text = str(error)
    except Exception:
        text = "<exception str() failed>"
    last = f"{name}: {text}\n" if text else f"{name}\n"
    notes = getattr(error, "__notes__", None)
    if isinstance(notes, (list, tuple)):
        return last + "".join(f"{note}\n" for note in notes)
    return last
