"""Task arguments as JSON: recorded at ``add_task()``, rehydrated against type hints.

Recording never reads, iterates or changes an argument. A value is walked only through
the containers that can be looked at without consuming anything (lists, tuples, sets,
dicts, pydantic models, dataclasses); anything that can only be turned into data by
reading it — a file, a stream, an upload, a generator or other iterator — is *not
storable*. So is an object with no JSON form (a lock, a socket, a connection):

* on a durable backend such an argument is a :class:`~fastapi_taskflow.TaskArgumentError`
  at ``add_task()``, naming it, and nothing is accepted;
* on an in-process backend the task receives the very objects it was given; the record
  shows ``{"__taskflow_unstored__": "<type name>"}`` in the argument's place.

``bytes`` (and ``bytearray``, ``memoryview``) are always stored, as
``{"__taskflow_bytes__": "<base64>"}``, and come back as ``bytes``.

Nothing is ever unpickled: a recovered task's arguments come back through pydantic,
validated against the function's annotations (models, datetimes, UUIDs, enums return as
themselves).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import inspect
import io
import ipaddress
import pathlib
import re
import typing
import uuid
from collections import deque
from collections.abc import AsyncIterable, Callable, Iterable
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic_core import PydanticSerializationError, to_jsonable_python

from .errors import TaskArgumentError

__all__ = [
    "BYTES_MARKER",
    "UNSTORED_MARKER",
    "decode_arguments",
    "encode_arguments",
    "encode_result",
    "has_unstored",
]

BYTES_MARKER = "__taskflow_bytes__"
"""The key of ``{"__taskflow_bytes__": "<base64>"}``, the stored form of ``bytes``."""

UNSTORED_MARKER = "__taskflow_unstored__"
"""The key of ``{"__taskflow_unstored__": "<type>"}``, in place of an argument that an
in-process backend kept in memory only."""

_SCALARS = (
    dt.date,
    dt.time,
    dt.timedelta,
    uuid.UUID,
    decimal.Decimal,
    pathlib.PurePath,
    ipaddress.IPv4Address,
    ipaddress.IPv6Address,
    ipaddress.IPv4Network,
    ipaddress.IPv6Network,
    ipaddress.IPv4Interface,
    ipaddress.IPv6Interface,
    re.Pattern,
)
_SEQUENCES = (list, tuple, set, frozenset, deque)


class _Unstorable(Exception):
    """A value that cannot be recorded without consuming it, or has no JSON form."""

    def __init__(self, value: object, what: str) -> None:
        super().__init__(what)
        self.type_name = type(value).__name__
        self.what = what


def encode_arguments(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    strict: bool,
) -> tuple[list[Any] | None, dict[str, Any] | None]:
    """Return the JSON form of a call's arguments, without touching the arguments.

    Args:
        func: the task function (used to name a bad positional argument).
        args: positional arguments.
        kwargs: keyword arguments.
        strict: raise for an argument that cannot be stored (durable backends); when
            False, put ``{"__taskflow_unstored__": "<type>"}`` in its place.

    Raises:
        TaskArgumentError: ``strict`` and an argument cannot be stored; names it.
    """
    out_args = [_encode_one(func, index, value, strict) for index, value in enumerate(args)]
    out_kwargs = {name: _encode_one(func, name, value, strict) for name, value in kwargs.items()}
    return out_args, out_kwargs


def encode_result(value: Any) -> Any:
    """Return a task's return value as JSON data, or its ``repr`` when it has none.

    As for arguments, nothing is consumed: a generator, an iterator or a stream
    returned by a task (or held in what it returned) makes the result its ``repr``
    rather than being run to its end (an endless one would hold the event loop for
    ever, one with side effects would have them run by taskflow)."""
    try:
        return _json_form(value)
    except _Unstorable:
        pass
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__qualname__} object; its repr() raised an exception>"


def has_unstored(args: list[Any] | None, kwargs: dict[str, Any] | None) -> bool:
    """Return True when stored arguments hold an ``__taskflow_unstored__`` summary: only
    the process that accepted the task has the real values."""
    return _contains_unstored(args) or _contains_unstored(kwargs)


def decode_arguments(
    func: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Rehydrate stored arguments against ``func``'s type hints.

    ``{"__taskflow_bytes__": ...}`` becomes ``bytes`` first, at any depth. Arguments
    without an annotation are passed as their JSON form.

    Raises:
        ValueError: an argument holds an ``__taskflow_unstored__`` summary.
    """
    if has_unstored(args, kwargs):
        raise ValueError("an argument was kept in memory by the accepting process only")
    adapters = _adapters(func)
    names = _positional_names(func)
    out_args = tuple(
        _validate(adapters.get(names[i]) if i < len(names) else None, _unmark(value))
        for i, value in enumerate(args)
    )
    out_kwargs = {
        name: _validate(adapters.get(name), _unmark(value)) for name, value in kwargs.items()
    }
    return out_args, out_kwargs


def _encode_one(func: Callable[..., Any], where: int | str, value: Any, strict: bool) -> Any:
    """Encode one argument: ``where`` is its position (int) or keyword (str)."""
    try:
        return _json_form(value)
    except _Unstorable as exc:
        if not strict:
            return {UNSTORED_MARKER: exc.type_name}
        if isinstance(where, int):
            names = _positional_names(func)  # only for the message: inspect is slow
            shown = names[where] if where < len(names) else f"#{where}"
            label = f"positional argument {shown!r}"
        else:
            label = f"keyword argument {where!r}"
        raise TaskArgumentError(
            f"{label} of {_name(func)} is a {exc.type_name} ({exc.what}), which cannot be "
            "stored as JSON without reading or changing it. Durable backends store "
            "arguments so another instance can run the task: pass plain data (str, int, "
            "float, bool, None, bytes, lists/dicts of those, pydantic models, dataclasses, "
            "datetimes, UUIDs, enums) or an id the task loads itself (for an upload: save "
            "it first and pass its path or id)."
        ) from None


def _json_form(value: Any) -> Any:
    """:func:`_to_json` of a whole value: one that holds itself (a dict in its own values)
    or nests deeper than Python recurses is unstorable too, and so is one whose own code
    fails while it is read (a property of a dataclass, a model's serializer)."""
    try:
        return _to_json(value)
    except _Unstorable:
        raise
    except RecursionError:
        raise _Unstorable(value, "a value that contains itself, or nests too deeply") from None
    except Exception as exc:
        what = f"an object whose conversion to JSON raised {type(exc).__name__}"
        raise _Unstorable(value, what) from None


def _to_json(value: Any) -> Any:
    """The JSON form of ``value``; raises ``_Unstorable`` rather than consume anything."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, enum.Enum):
        return _to_json(value.value)
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {BYTES_MARKER: base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, _SCALARS):
        return to_jsonable_python(value)
    if isinstance(value, dict):
        return {_key(key): _to_json(item) for key, item in value.items()}
    if isinstance(value, _SEQUENCES):
        return [_to_json(item) for item in value]
    if isinstance(value, BaseModel):
        try:  # python mode keeps bytes as bytes (marked below) and leaves iterators unread
            dumped = value.model_dump(mode="python", by_alias=True)
        except (PydanticSerializationError, TypeError, ValueError):
            raise _Unstorable(value, "a model that cannot be serialised") from None
        return _to_json(dumped)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, io.IOBase) or callable(getattr(value, "read", None)):
        raise _Unstorable(value, "a file or stream")
    if isinstance(value, (Iterable, AsyncIterable)) or inspect.isawaitable(value):
        raise _Unstorable(value, "an iterator, generator or other object read by iterating")
    try:
        return to_jsonable_python(value, bytes_mode="base64")
    except (PydanticSerializationError, TypeError, ValueError):
        raise _Unstorable(value, "an object with no JSON form") from None


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    try:
        return str(to_jsonable_python(key))
    except (PydanticSerializationError, TypeError, ValueError):
        raise _Unstorable(key, "a dict key with no JSON form") from None


def _unmark(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get(BYTES_MARKER), str):
            return base64.b64decode(value[BYTES_MARKER])
        return {key: _unmark(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unmark(item) for item in value]
    return value


def _contains_unstored(value: Any) -> bool:
    if isinstance(value, dict):
        if len(value) == 1 and UNSTORED_MARKER in value:
            return True
        return any(_contains_unstored(item) for item in value.values())
    if isinstance(value, list):
        return any(_contains_unstored(item) for item in value)
    return False


def _validate(adapter: TypeAdapter[Any] | None, value: Any) -> Any:
    return value if adapter is None else adapter.validate_python(value)


def _name(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", None) or repr(func)


@lru_cache(maxsize=1024)
def _positional_names(func: Callable[..., Any]) -> list[str]:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


@lru_cache(maxsize=1024)
def _adapters(func: Callable[..., Any]) -> dict[str, TypeAdapter[Any]]:
    try:
        hints = typing.get_type_hints(func)
    except Exception:
        return {}
    hints.pop("return", None)
    return {name: TypeAdapter(hint) for name, hint in hints.items()}
