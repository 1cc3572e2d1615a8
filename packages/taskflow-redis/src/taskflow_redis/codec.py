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
from json.encoder import encode_basestring
from typing import Any

from pydantic import ValidationError
from pydantic_core import to_json

from fastapi_taskflow.models import LogEntry, TaskRecord, TaskStatus, TaskUpdate, fold_text
from fastapi_taskflow.redaction import mask_log_records

from .errors import RedisBackendError
from .keys import KeySpace, micros, padded

__all__ = [
    "MUTABLE_FIELDS",
    "STATUS_VALUE",
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
    "validate_record",
]

logger = mask_log_records(logging.getLogger("taskflow_redis"))

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


STATUS_VALUE: dict[str, str] = {status: status.value for status in TaskStatus}
"""The stored text of each status (a dict lookup, cheaper than ``TaskStatus(x).value``)."""


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


_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps_compact(value: Any) -> str:
    """Compact JSON (no spaces, non-ASCII kept)."""
    return _COMPACT.encode(value)


def pairs(flat: Sequence[Any]) -> dict[str, Any]:
    """Turn a flat ``HGETALL`` reply ``[k1, v1, k2, v2, ...]`` into a dict keyed by str."""
    return {as_str(flat[i]): flat[i + 1] for i in range(0, len(flat) - 1, 2)}


_DEFAULTS = {name: TaskRecord.model_fields[name].default for name in MUTABLE_FIELDS}

_RECORD_JSON = TaskRecord.__pydantic_serializer__.to_json

_IX_CACHE: dict[tuple[str, str, str], str] = {}
_IX_CACHE_SIZE = 1024


def _index_keys(record: TaskRecord, keys: KeySpace) -> str:
    """The ``ix`` field: JSON list of the record's other index keys, after ``idx:``."""
    tags = record.tags
    if not tags:  # the common case: one entry per (function, queue), computed once
        cache_key = (keys.base, record.func_name, record.queue)
        found = _IX_CACHE.get(cache_key)
        if found is not None:
            return found
    extra = [keys.func_index(record.func_name), keys.queue_index(record.queue)]
    extra += [keys.tag_index(k, v) for k, v in sorted(tags.items())]
    ix = dumps_compact([key.removeprefix(keys.base + "idx:") for key in extra])
    if not tags:
        if len(_IX_CACHE) >= _IX_CACHE_SIZE:
            _IX_CACHE.clear()
        _IX_CACHE[cache_key] = ix
    return ix


def encode_record(record: TaskRecord, keys: KeySpace) -> list[str]:
    """Return the ``create.lua`` argument block for ``record`` (header then hash fields)."""
    values = record.__dict__
    fixed = _RECORD_JSON(record, exclude=_SKIP, exclude_defaults=True, fallback=repr)
    member = padded(micros(record.created_at)) + ":" + record.task_id
    ix = _index_keys(record, keys)
    status = STATUS_VALUE.get(record.status) or TaskStatus(record.status).value
    func_name = record.func_name
    fields = ["d", fixed.decode("utf-8"), "s", status, "m", member, "ix", ix, "f", func_name]
    idem = record.idempotency_key
    if idem is not None:
        fields += ["k", idem]
    finished = record.finished_at
    fin = "" if finished is None else str(micros(finished))
    if fin:
        fields += ["fin", fin]
    started = record.started_at
    if started is not None:
        fields += ["st", str(micros(started))]
    owner = record.owner
    if owner is not None:
        fields += ["o", owner]
    if record.tags:
        fields += ["sx", fold_text("\x00".join(p for pair in record.tags.items() for p in pair))]
    for name, default in _DEFAULTS.items():
        value = values[name]
        if value is default or (value == default and type(value) is type(default)):
            continue
        fields += [name, _value_json(value)]
    return [
        record.task_id,
        idem or "",
        status,
        func_name,
        member,
        ix,
        fin,
        str(len(fields) // 2),
        *fields,
    ]


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
    fin = owner = ""
    for name, value in update.changes().items():
        fields += [name, _value_json(value)]
        if name == "started_at":
            fields += ["st", "" if value is None else str(micros(value))]
        elif name == "finished_at":
            fin = "-" if value is None else str(micros(value))
        elif name == "owner":
            owner = "-" if value is None else "=" + value
    return fin, owner, fields


def _value_json(value: Any) -> str:
    """JSON of a record field's value, as pydantic writes it (fast paths for scalars)."""
    if value is None:
        return "null"
    kind = type(value)
    if kind is str:
        return encode_basestring(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is datetime:
        return '"' + iso_utc(value) + '"'
    return to_json(value, fallback=repr).decode("utf-8")


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


validate_record = TaskRecord.__pydantic_validator__.validate_json
"""Validate a record's JSON (``str`` or ``bytes``); raises ``ValidationError``, a
``ValueError``. The fast path of :func:`decode_record` for callers that report errors."""


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
