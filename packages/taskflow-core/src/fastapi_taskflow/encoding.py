"""Task arguments as JSON: encoded at ``add_task()``, rehydrated against type hints.

Nothing is ever unpickled: a recovered task's arguments come back through pydantic,
validated against the function's annotations (models, datetimes, UUIDs, enums return as
themselves).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from pydantic import TypeAdapter
from pydantic_core import PydanticSerializationError, to_jsonable_python

from .errors import TaskArgumentError

__all__ = ["decode_arguments", "encode_arguments", "encode_result"]


def encode_arguments(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    strict: bool,
) -> tuple[list[Any] | None, dict[str, Any] | None]:
    """Return the JSON form of a call's arguments.

    Args:
        func: the task function (used to name a bad positional argument).
        args: positional arguments.
        kwargs: keyword arguments.
        strict: raise for an argument that is not JSON-encodable (durable backends);
            when False, return ``(None, None)`` instead.

    Raises:
        TaskArgumentError: ``strict`` and an argument cannot be encoded; names it.
    """
    try:
        return to_jsonable_python(list(args)), to_jsonable_python(kwargs)
    except (PydanticSerializationError, TypeError, ValueError):
        if not strict:
            return None, None
    names = _positional_names(func)
    for index, value in enumerate(args):
        label = names[index] if index < len(names) else f"#{index}"
        _check(func, f"positional argument {label!r}", value)
    for name, value in kwargs.items():
        _check(func, f"keyword argument {name!r}", value)
    raise TaskArgumentError(f"the arguments of {_name(func)} cannot be stored as JSON")


def encode_result(value: Any) -> Any:
    """Return a task's return value as JSON data, or its ``repr`` when it has none."""
    try:
        return to_jsonable_python(value)
    except (PydanticSerializationError, TypeError, ValueError):
        return repr(value)


def decode_arguments(
    func: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Rehydrate stored arguments against ``func``'s type hints.

    Arguments without an annotation are passed as their JSON form.
    """
    adapters = _adapters(func)
    names = _positional_names(func)
    out_args = tuple(
        _validate(adapters.get(names[i]) if i < len(names) else None, value)
        for i, value in enumerate(args)
    )
    out_kwargs = {name: _validate(adapters.get(name), value) for name, value in kwargs.items()}
    return out_args, out_kwargs


def _validate(adapter: TypeAdapter[Any] | None, value: Any) -> Any:
    return value if adapter is None else adapter.validate_python(value)


def _check(func: Callable[..., Any], label: str, value: Any) -> None:
    try:
        to_jsonable_python(value)
    except (PydanticSerializationError, TypeError, ValueError) as exc:
        raise TaskArgumentError(
            f"{label} of {_name(func)} is a {type(value).__name__}, which cannot be stored "
            "as JSON. Durable backends store arguments so another instance can run the task: "
            "pass plain data (str, int, float, bool, None, lists/dicts of those, pydantic "
            "models, dataclasses, datetimes, UUIDs, enums) or an id the task loads itself."
        ) from exc


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
