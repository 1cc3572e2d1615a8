"""How records and logs are stored: compact pydantic JSON in one hash per task.

A task hash has one field ``d`` with the JSON of the fields that never change after
create (id, function, arguments, tags ...), one field per mutable field holding that
field's JSON value (so a transition writes only what changed, without parsing JSON on
the server), and a few raw fields the Lua scripts read: ``s`` (status), ``m`` (index
member), ``ix`` (its other index keys, after ``{prefix}:idx:``), ``f`` (function name),
``k`` (idempotency key), ``fin`` and ``st`` (finished and started times in microseconds),
``o`` (the owner, raw, for the ownership index) and ``sx`` (tag keys and values,
ASCII-lowered, for text search). Fields at their
default value are left out. On the way out a script splices the JSON
fragments into one document (string concatenation, no JSON parsing on the server), so a
reply is one string that pydantic validates once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from pydantic_core import to_json

from fastapi_taskflow.models import LogEntry, TaskRecord, TaskUpdate, fold_text

from .errors import RedisBackendError
from .keys import KeySpace, micros

__all__ = [
    "MUTABLE_FIELDS",
    "CorruptValue",
    "as_str",
    "decode_logs",
    "decode_record",
    "dumps_compact",
    "encode_log",
    "encode_record",
    "encode_update",
    "frame",
    "with_logs",
    "iso_utc",
    "pairs",
]

logger = logging.getLogger("taskflow_redis")

MUTABLE_FIELDS = (
    "attempt",
    "updated_at",
    "started_at",
    "finished_at",
    "error",
    "result",
    "progress",
    "cancel_requested",
    "owner",
)
"""Record fields that may change after create; each is its own hash field."""

_SKIP: set[str] = {"status", "logs", *MUTABLE_FIELDS}


class CorruptValue(Exception):
    """A stored value could not be decoded (internal; callers log and skip)."""


def as_str(value: Any) -> str:
    """Return a reply item as ``str`` (clients may or may not decode responses)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


def dumps_compact(value: Any) -> str:
    """Compact JSON (no spaces, non-ASCII kept)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def pairs(flat: Sequence[Any]) -> dict[str, Any]:
    """Turn a flat ``HGETALL`` reply ``[k1, v1, k2, v2, ...]`` into a dict keyed by str."""
    return {as_str(flat[i]): flat[i + 1] for i in range(0, len(flat) - 1, 2)}


_DEFAULTS = {name: TaskRecord.model_fields[name].default for name in MUTABLE_FIELDS}


def encode_record(record: TaskRecord, keys: KeySpace) -> list[str]:
    """Return the ``create.lua`` argument block for ``record`` (header then hash fields)."""
    fixed = record.model_dump_json(exclude=_SKIP, exclude_defaults=True, fallback=repr)
    member = keys.member(record.created_at, record.task_id)
    extra = [keys.func_index(record.func_name), keys.queue_index(record.queue)]
    extra += [keys.tag_index(k, v) for k, v in sorted(record.tags.items())]
    ix = dumps_compact([key.removeprefix(keys.base + "idx:") for key in extra])
    fields = ["d", fixed, "s", record.status.value, "m", member, "ix", ix]
    fields += ["f", record.func_name]
    if record.idempotency_key is not None:
        fields += ["k", record.idempotency_key]
    fin = "" if record.finished_at is None else str(micros(record.finished_at))
    if fin:
        fields += ["fin", fin]
    if record.started_at is not None:
        fields += ["st", str(micros(record.started_at))]
    if record.owner is not None:
        fields += ["o", record.owner]
    if record.tags:
        fields += ["sx", fold_text("\x00".join(p for pair in record.tags.items() for p in pair))]
    values = record.__dict__
    for name, default in _DEFAULTS.items():
        value = values[name]
        if value is default or (value == default and type(value) is type(default)):
            continue
        if name == "result":
            fields += [name, to_json(value, fallback=repr).decode("utf-8")]
        else:
            fields += [name, _value_json(value)]
    header = [
        record.task_id,
        record.idempotency_key or "",
        record.status.value,
        record.func_name,
        member,
        ix,
        fin,
        str(len(fields) // 2),
    ]
    return header + fields


def encode_update(update: TaskUpdate | None, updated_at: str) -> tuple[str, str, list[str]]:
    """Return ``(fin, owner, field pairs)`` for one item of ``transition.lua``.

    ``updated_at`` is the JSON of the new ``updated_at``. ``fin`` is ``''`` when
    ``finished_at`` is not being changed, ``'-'`` when it is cleared, else its
    microseconds; ``owner`` is ``''`` when the owner is not being changed, ``'-'`` when it
    is cleared, else ``'='`` followed by the new owner.
    """
    fields = ["updated_at", updated_at]
    if update is None:
        return "", "", fields
    changes = update.changes()
    if not changes:
        return "", "", fields
    fin = owner = ""
    for name, value in changes.items():
        if name == "result":
            fields += ["result", to_json(value, fallback=repr).decode("utf-8")]
            continue
        fields += [name, _value_json(value)]
        if name == "started_at":
            fields += ["st", "" if value is None else str(micros(value))]
        elif name == "finished_at":
            fin = "-" if value is None else str(micros(value))
        elif name == "owner":
            owner = "-" if value is None else "=" + value
    return fin, owner, fields


def _value_json(value: Any) -> str:
    """JSON of a scalar field of :class:`TaskUpdate` (the fast path of ``to_json``)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, datetime):
        return '"' + iso_utc(value) + '"'
    if isinstance(value, str):
        return dumps_compact(value)
    return to_json(value).decode("utf-8")


def iso_utc(moment: datetime) -> str:
    """``moment`` in ISO 8601 as pydantic writes it (``Z`` for UTC)."""
    text = moment.isoformat()
    if text.endswith("+00:00"):
        return text[:-6] + "Z"
    return text


def frame(reply: Any, count: int) -> list[str]:
    """Split a batch script's reply (one line per item) into ``count`` lines.

    Raises:
        RedisBackendError: the reply does not have one line per item.
    """
    lines = as_str(reply).split("\n")
    if len(lines) != count:
        raise RedisBackendError(
            f"a taskflow Redis script answered {len(lines)} lines for {count} items; "
            "is another version of taskflow-redis using the same prefix?"
        )
    return lines


def decode_record(raw: Any) -> TaskRecord:
    """Validate the record JSON that the scripts splice from a task hash.

    Raises:
        CorruptValue: the hash is not a record this backend wrote.
    """
    try:
        return TaskRecord.model_validate_json(raw if isinstance(raw, (str, bytes)) else str(raw))
    except (ValueError, ValidationError) as exc:
        raise CorruptValue(str(exc).splitlines()[0]) from exc


def with_logs(raw: Any, logs: Sequence[Any]) -> TaskRecord | None:
    """Validate a record and its log entries as one JSON document, or None if any is bad.

    The fast path of ``get()``: one pydantic call instead of one per log line. On None
    the caller decodes them one by one, reporting what is corrupt.
    """
    record = _as_bytes(raw)
    if not record.endswith(b"}"):
        return None
    document = b"".join(
        (record[:-1], b',"logs":[', b",".join(_as_bytes(item) for item in logs), b"]}")
    )
    try:
        return TaskRecord.model_validate_json(document)
    except (ValueError, ValidationError):
        return None


def encode_log(entry: LogEntry) -> str:
    """Encode one log entry as compact JSON."""
    return entry.model_dump_json(fallback=repr)


def decode_logs(raw: Iterable[Any], task_id: str) -> list[LogEntry]:
    """Decode a task's log list, skipping (and reporting) entries that are not ours."""
    entries = []
    for item in raw:
        try:
            entries.append(LogEntry.model_validate_json(_as_bytes(item)))
        except ValidationError:
            logger.warning("skipped a corrupt log entry of task %s in Redis: %.200r", task_id, item)
    return entries
