"""What every store can hold, checked once for all backends.

``add_task()`` refuses anything outside these limits with an ``InvalidTaskError`` that
names the field and the limit, before anything is recorded, identically on every
backend. What a task produces while it runs (its return value, its error message, its
log lines) cannot be refused that way: :func:`clean_text` and :func:`clean_json` replace
the characters no store can hold, so a task's final write always lands.

The limits (documented in ``docs/guarantees.md``):

* ``priority``: an integer from ``-(2**31 - 1)`` to ``2**31 - 1`` (a 32-bit column on
  PostgreSQL and MySQL);
* text the stores keep as text (tag keys and values, idempotency keys, task and queue
  names): no lone surrogate (``"\\ud800"``: not valid UTF-8) and no NUL character
  (PostgreSQL refuses it);
* tags: at most :data:`TAGS_MAX_JSON` characters of ``json.dumps(tags)`` (MySQL's
  ``TEXT`` column holds 64 KiB);
* an idempotency key: 1 to :data:`IDEMPOTENCY_KEY_MAX` characters;
* a task or queue name: 1 to :data:`NAME_MAX` characters;
* an exception's message, as a failed attempt records it: its first
  :data:`ERROR_TEXT_MAX` characters (see ``failure.exception_text``);
* a ``task_log()`` message: its first :data:`LOG_MESSAGE_MAX` characters (a text value
  of ``extra`` too, and a list or object whose JSON text is longer: that text, cut); an
  attempt's ``task_log()`` lines: its first :data:`LOG_LINES_MAX`;
* arguments on a durable backend: no lone surrogate in any string, key or value (they
  are stored as UTF-8 JSON; a NUL is fine there, JSON escapes it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, cast

from pydantic_core import to_jsonable_python

from .errors import InvalidOperationError, InvalidTaskError, TaskArgumentError
from .models import LogEntry, TaskQuery

__all__ = [
    "ERROR_TEXT_MAX",
    "IDEMPOTENCY_KEY_MAX",
    "LOG_LINES_MAX",
    "LOG_MESSAGE_MAX",
    "NAME_MAX",
    "PRIORITY_MAX",
    "PRIORITY_MIN",
    "REPLACEMENT",
    "TAGS_MAX_JSON",
    "UNKNOWN_TASK_GRACE",
    "check_arguments",
    "check_idempotency_key",
    "check_lookup",
    "check_name",
    "check_priority_range",
    "check_tags_size",
    "check_text",
    "clean_json",
    "clean_text",
    "cut_text",
    "storable_changes",
    "storable_entries",
    "storable_names",
    "storable_text",
    "surrogate_error",
    "unmatchable",
]

PRIORITY_MAX = 2**31 - 1
"""Highest priority every store holds (a signed 32-bit column)."""

PRIORITY_MIN = -(2**31 - 1)
"""Lowest priority every store holds (symmetric, so ``-priority`` fits too)."""

TAGS_MAX_JSON = 32_768
"""Most characters ``json.dumps(tags)`` may have (ASCII, so also bytes)."""

IDEMPOTENCY_KEY_MAX = 1024
"""Longest idempotency key, in characters."""

NAME_MAX = 255
"""Longest task name or queue name, in characters."""

ERROR_TEXT_MAX = 10_000
"""Most characters of an exception's message a failed attempt records (in its error,
its log line and its traceback); the rest is cut, and the cut says how much."""

LOG_MESSAGE_MAX = 10_000
"""Most characters of a ``task_log()`` message a task records (a whole payload or page
logged by mistake); the rest is cut, and the cut says how much. One such line would
otherwise be stored with every line of its write, and a MySQL server refuses a write
larger than its ``max_allowed_packet``: the neighbours would be lost with it."""


LOG_LINES_MAX = 10_000
"""Most ``task_log()`` lines an attempt stores; a warning line says when later ones
were not stored. A task that logs in a tight loop would otherwise write every line
(the store grows by a row a line, and reading the task returns them all); observers
still receive every line."""


def cut_text(text: str, limit: int) -> str:
    """``text`` when it has at most ``limit`` characters, else its first ``limit``
    followed by how many more were not recorded."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters not recorded]"


UNKNOWN_TASK_GRACE = timedelta(minutes=10)
"""How long a stored task whose function no running instance has registered waits
(since it last changed) for an instance that has it, before it is made FAILED."""

REPLACEMENT = "\ufffd"
"""What :func:`clean_text` puts in place of a character no store can hold."""


def _bad_char(text: str, *, nul: bool) -> str | None:
    """Return a description of the first character of ``text`` no store holds, or None."""
    if nul and "\x00" in text:
        return "a NUL character ('\\x00')"
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"a lone surrogate ({text[exc.start]!r}), which is not valid UTF-8"
    return None


def check_text(field: str, text: str) -> None:
    """Raise ``InvalidTaskError`` if ``text`` holds a NUL or a lone surrogate.

    Args:
        field: how to name the value in the message (``"tag 'user'"``).
        text: the value.
    """
    bad = _bad_char(text, nul=True)
    if bad is not None:
        raise InvalidTaskError(
            f"{field} contains {bad}; task stores cannot hold it. Remove it or encode the "
            "value (for example with .encode('utf-8', 'surrogateescape').hex())."
        )


def storable_text(text: str) -> bool:
    """True when every store can hold ``text`` (no NUL, no lone surrogate).

    No task can have an id or an idempotency key that is not: a store's ``get`` and
    ``find_by_key`` answer None for one without asking their server (which would refuse
    the value itself, each in its own way)."""
    return _bad_char(text, nul=True) is None


def unmatchable(query: TaskQuery) -> bool:
    """True when a text filter of ``query`` (function, queue, tag, ``q``) holds a NUL or
    a lone surrogate: nothing a store holds contains one, so no task matches, and a
    store answers an empty page without asking its server (which would refuse the
    value)."""
    texts = [query.func_name, query.queue, query.q]
    for key, value in (query.tags or {}).items():
        texts += (key, value)
    return any(text is not None and not storable_text(text) for text in texts)


def storable_names(names: Iterable[str]) -> list[str]:
    """The names of ``names`` a store can hold, in order (a function name with a NUL
    or a lone surrogate names no task)."""
    return [name for name in names if storable_text(name)]


def check_lookup(field: str, value: object) -> None:
    """Raise ``InvalidOperationError`` unless ``value``, a task id or an idempotency key
    to look up, is a string.

    Args:
        field: how to name the value in the message (``"task_id"``).
        value: the value given.
    """
    if not isinstance(value, str):
        what = " (the id add_task() returned)" if field == "task_id" else ""
        raise InvalidOperationError(f"{field} must be a string{what}, got {type(value).__name__}")


def check_priority_range(priority: int | None) -> None:
    """Raise ``InvalidTaskError`` unless ``priority`` is None or within the limits."""
    if priority is not None and not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise InvalidTaskError(
            f"priority must be between {PRIORITY_MIN} and {PRIORITY_MAX} (a 32-bit "
            f"integer, the same on every backend), got {priority}; conventionally 1 is "
            "lowest and 10 highest"
        )


def check_tags_size(tags: dict[str, str]) -> None:
    """Raise ``InvalidTaskError`` if a tag holds a bad character or the tags are too big."""
    for key, value in tags.items():
        check_text(f"tag key {_short(key)}", key)
        check_text(f"the value of tag {_short(key)}", value)
    if tags:
        size = len(json.dumps(tags))
        if size > TAGS_MAX_JSON:
            raise InvalidTaskError(
                f"tags take {size} characters as JSON; the limit is {TAGS_MAX_JSON} on every "
                "backend. Keep tags short (ids, labels) and put bulky data in the task's "
                "arguments."
            )


def check_idempotency_key(key: str) -> None:
    """Raise ``InvalidTaskError`` unless ``key`` is 1 to ``IDEMPOTENCY_KEY_MAX`` clean
    characters."""
    if not key or len(key) > IDEMPOTENCY_KEY_MAX:
        raise InvalidTaskError(
            f"idempotency_key must be 1 to {IDEMPOTENCY_KEY_MAX} characters, got "
            f"{len(key)}; hash a longer key (for example with hashlib.sha256)"
        )
    check_text("idempotency_key", key)


def check_name(field: str, name: str) -> None:
    """Raise ``InvalidTaskError`` unless a task or queue name fits every store."""
    if len(name) > NAME_MAX:
        how = " (@task_manager.task(name=...))" if field == "task name" else ""
        raise InvalidTaskError(
            f"{field} {_short(name)} is {len(name)} characters; the limit is {NAME_MAX}. "
            f"Give it a shorter name{how}."
        )
    check_text(f"{field} {_short(name)}", name)


def check_arguments(
    func: Callable[..., Any], args_json: list[Any] | None, kwargs_json: dict[str, Any] | None
) -> None:
    """Raise ``TaskArgumentError`` naming the first argument with a lone surrogate.

    ``args_json``/``kwargs_json`` are the JSON forms recorded for the call (lists,
    dicts, strings, numbers): walking them reads nothing of the caller's objects.
    """
    for index, value in enumerate(args_json or ()):
        _check_json(func, f"positional argument #{index}", value)
    for name, value in (kwargs_json or {}).items():
        _check_json(func, f"keyword argument {name!r}", value)


def _check_json(func: Callable[..., Any], label: str, value: Any) -> None:
    for text in _strings(value):
        bad = _bad_char(text, nul=False)
        if bad is not None:
            name = getattr(func, "__qualname__", None) or repr(func)
            raise TaskArgumentError(
                f"{label} of {name} contains {bad}; durable backends store arguments as "
                "UTF-8 JSON and cannot hold it. Pass valid text (decode bytes with "
                "errors='replace'), or bytes/hex for raw data."
            )


def surrogate_error(exc: TaskArgumentError) -> TaskArgumentError | None:
    """Return a clearer error when ``exc`` (an argument that cannot be encoded) was
    caused by a lone surrogate (in a dict key, which the JSON encoder refuses), else None."""
    cause = exc.__cause__
    if cause is None or "surrogates not allowed" not in str(cause):
        return None
    label = str(exc).split(" is a ", 1)[0]
    return TaskArgumentError(
        f"{label} contains a lone surrogate, which is not valid UTF-8; durable backends "
        "store arguments as UTF-8 JSON and cannot hold it. Pass valid text (decode bytes "
        "with errors='replace'), or bytes/hex for raw data."
    )


def _strings(value: Any) -> list[str]:
    found: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                found.append(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return found


def clean_text(text: str, *, nul: bool = True) -> tuple[str, int]:
    """Return ``text`` with lone surrogates (and NULs, unless ``nul=False``) replaced by
    U+FFFD, and how many characters were replaced."""
    if text.isascii() and (not nul or "\x00" not in text):
        return text, 0
    replaced = 0
    out: list[str] = []
    for char in text:
        if (nul and char == "\x00") or "\ud800" <= char <= "\udfff":
            out.append(REPLACEMENT)
            replaced += 1
        else:
            out.append(char)
    return "".join(out), replaced


def clean_json(value: Any) -> tuple[Any, int]:
    """Return JSON data with the lone surrogates of every string (keys too) replaced,
    and how many were. A NUL is kept: stored JSON escapes it."""
    if isinstance(value, str):
        return clean_text(value, nul=False)
    if isinstance(value, list):
        total = 0
        items = []
        for item in value:
            cleaned, n = clean_json(item)
            items.append(cleaned)
            total += n
        return items, total
    if isinstance(value, dict):
        total = 0
        out: dict[Any, Any] = {}
        for key, item in value.items():
            new_key, n1 = clean_json(key) if isinstance(key, str) else (key, 0)
            cleaned, n2 = clean_json(item)
            out[new_key] = cleaned
            total += n1 + n2
        return out, total
    return value, 0


def _short(text: str) -> str:
    shown = text if len(text) <= 40 else text[:37] + "..."
    return repr(shown)


def storable_changes(changes: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Return a status change's fields with its error and result made storable, and how
    many characters were replaced (0: ``changes`` itself is returned, untouched)."""
    replaced = 0
    error = changes.get("error")
    if error is not None and isinstance(error, str):
        clean_error, replaced = clean_text(error)
        if replaced:
            changes = {**changes, "error": clean_error}
    if changes.get("result") is not None:
        clean_result, n = clean_json(changes["result"])
        if n:
            changes = {**changes, "result": clean_result}
            replaced += n
    return changes, replaced


def storable_entries(entries: list[LogEntry]) -> tuple[list[LogEntry], int]:
    """Return log entries every store can hold (message cleaned, ``extra`` made JSON
    with ``repr`` for what has no JSON form), and how many characters were replaced."""
    out: list[LogEntry] = []
    replaced = 0
    for entry in entries:
        message, n = clean_text(entry.message)
        extra = entry.extra
        if extra and not _plain_text(extra):
            extra, m = clean_json(_json_extra(extra))
            extra = _cut_large_values(extra)
            n += m
        if n or extra is not entry.extra:
            entry = entry.model_copy(update={"message": message, "extra": extra})
        replaced += n
        out.append(entry)
    return out, replaced


def _json_extra(extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` as JSON data, ``repr`` standing for a value that has no JSON form.

    Done per value when the whole fails: ``bytes`` that are not UTF-8 text (a file's
    first bytes), a value holding itself, or one whose own code raises while it is read
    would otherwise fail the line, and with it the task's outcome and its neighbours.
    """
    try:
        return cast(dict[str, Any], to_jsonable_python(extra, fallback=repr))
    except Exception:
        return {key: _json_value(value) for key, value in extra.items()}


def _json_value(value: Any) -> Any:
    try:
        return to_jsonable_python(value, fallback=repr)
    except Exception:
        try:
            return repr(value)
        except Exception:
            return f"<{type(value).__qualname__} object; its repr() raised an exception>"


def _cut_large_values(extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` (JSON values), with each list or object whose JSON text is longer than
    :data:`LOG_MESSAGE_MAX` replaced by that text, cut (as a long text value already
    is when it is logged); ``extra`` itself when none is."""
    cut: dict[str, Any] | None = None
    for key, value in extra.items():
        if isinstance(value, list | dict):
            text = json.dumps(value, ensure_ascii=False)
            if len(text) > LOG_MESSAGE_MAX:
                if cut is None:
                    cut = dict(extra)
                cut[key] = cut_text(text, LOG_MESSAGE_MAX)
    return extra if cut is None else cut


def _plain_text(extra: dict[str, Any]) -> bool:
    """True when ``extra`` maps ASCII text to ASCII text: storable as it is (a failed
    attempt's ``traceback`` line, say), with no copy."""
    for key, value in extra.items():
        if type(value) is not str or not value.isascii() or not key.isascii():
            return False
    return True
