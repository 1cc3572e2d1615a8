"""The data taskflow stores and passes around: task records, logs, queries, stats.

These are pydantic models, so a record is validated once where it enters and is JSON all
the way out (``record.to_dict()`` is what a route returns).
"""

from __future__ import annotations

import base64
import json
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from types import MappingProxyType
from typing import Annotated, Any, TypeVar, cast

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from .errors import InvalidOperationError

__all__ = [
    "ACTIVE_STATUSES",
    "APPLIED",
    "DURATION_STATUSES",
    "DURATION_WINDOW",
    "EPOCH",
    "KEY_RELEASING_STATUSES",
    "LIVE_FIELDS",
    "PERCENTILES",
    "TERMINAL_STATUSES",
    "Applied",
    "Claim",
    "CreateResult",
    "DurationStats",
    "Transition",
    "LiveRecord",
    "LogEntry",
    "LogLine",
    "TaskPage",
    "TaskQuery",
    "TaskRecord",
    "TaskStats",
    "TaskStatus",
    "TaskUpdate",
    "ThroughputBucket",
    "bucket_start",
    "construct",
    "decode_cursor",
    "encode_cursor",
    "every_field",
    "fields_set_with",
    "fold_text",
    "from_fields",
    "log_entry",
    "log_line",
    "duration_stats",
    "matches_text",
    "nearest_rank",
]


class TaskStatus(str, Enum):
    """Where a task is in its life.

    ``PENDING`` → ``RUNNING`` → one of ``SUCCESS``, ``FAILED``, ``INTERRUPTED``,
    ``CANCELLED``; ``REJECTED`` when a full queue refused it. A task waiting for a retry is
    ``PENDING`` again with ``attempt`` counting the attempts already made.
    """

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"
    REJECTED = "rejected"

    @property
    def is_terminal(self) -> bool:
        """True when the task will not change status again."""
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {
        TaskStatus.SUCCESS,
        TaskStatus.FAILED,
        TaskStatus.INTERRUPTED,
        TaskStatus.CANCELLED,
        TaskStatus.REJECTED,
    }
)
"""Statuses a task never leaves."""

ACTIVE_STATUSES = frozenset({TaskStatus.PENDING, TaskStatus.RUNNING})
"""Statuses of a task that has not finished: the tasks an instance owns
(:meth:`Store.owners`, :meth:`Store.owned` and :meth:`Store.adopt` look only at these)."""

KEY_RELEASING_STATUSES = frozenset({TaskStatus.FAILED, TaskStatus.REJECTED})
"""A task in one of these statuses no longer holds its idempotency key: a new task with
the same key may be created (the failed or rejected one stays in the history)."""


class LogEntry(BaseModel):
    """One line a task wrote with ``task_log()`` (or the engine wrote about it)."""

    model_config = ConfigDict(frozen=True)

    timestamp: datetime
    level: str = "info"
    message: str
    attempt: int = 0
    extra: dict[str, Any] = Field(default_factory=dict)


LogLine = tuple[datetime, str, str, int, tuple[tuple[str, Any], ...]]
"""A log line as the engine collects it and an in-process store keeps it:
``(timestamp, level, message, attempt, extra)`` with ``extra`` as a tuple of its
``(key, value)`` pairs. A tuple holding only strings, numbers, datetimes and tuples is
left alone by Python's garbage collector (a dict, even an empty one, would keep it
tracked: one more object for every full collection to walk). See :func:`log_line`,
:func:`log_entry` and :meth:`InProcessStore.append_now
<fastapi_taskflow.protocols.InProcessStore.append_now>`."""


def log_line(
    timestamp: datetime, level: str, message: str, attempt: int, extra: Mapping[str, Any]
) -> LogLine:
    """The :data:`LogLine` of a log line's fields."""
    return (timestamp, level, message, attempt, tuple(extra.items()) if extra else ())


def log_entry(line: LogLine) -> LogEntry:
    """The :class:`LogEntry` of ``line``, unvalidated (its values are of their types)."""
    timestamp, level, message, attempt, extra = line
    return construct(
        LogEntry,
        timestamp=timestamp,
        level=level,
        message=message,
        attempt=attempt,
        extra=dict(extra),
    )


class TaskRecord(BaseModel):
    """Everything the store knows about one task.

    ``args`` and ``kwargs`` hold the JSON form of the call's arguments: ``bytes`` as
    ``{"__taskflow_bytes__": "<base64>"}``, and, on an in-process backend, an argument
    that cannot be stored without reading it (a file, a stream, a generator) as
    ``{"__taskflow_unstored__": "<type name>"}``. ``logs`` is filled by
    :meth:`Store.get` and left empty in query results.
    """

    model_config = ConfigDict(validate_assignment=False)

    task_id: str
    func_name: str
    status: TaskStatus = TaskStatus.PENDING
    queue: str = "default"
    priority: int = 0
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    idempotency_key: str | None = None
    attempt: int = 0
    max_retries: int = 0
    requeue_on_interrupt: bool = False
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    result: Any = None
    progress: float | None = None
    cancel_requested: bool = False
    owner: str | None = None
    logs: list[LogEntry] = Field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the record as JSON-ready data (what a route returns)."""
        return self.model_dump(mode="json")


_EMPTY_ARGS: tuple[Any, ...] = ()

NO_ENTRIES: Mapping[str, Any] = MappingProxyType({})
"""An empty mapping nobody can change: the tags and the keyword arguments of every
:class:`LiveRecord` that has none. One shared object instead of two empty dicts per
task: two allocations fewer per task, and fewer objects for the garbage collector to
visit when it walks the records (measured: S1 ~-19 %)."""


class LiveRecord:
    """A task's record as a store in this process keeps it: one slotted object.

    It has the attributes of :class:`TaskRecord` but ``logs`` and is changed in place
    by its store, one attribute per written field. It is what ``memory://`` keeps per
    task and what its ``create_now``/``transition_now`` exchange with the engine
    (:class:`~fastapi_taskflow.protocols.InProcessStore`): a pydantic record with its
    ``__dict__``, its ``args`` list and its ``logs`` list is four objects for Python's
    garbage collector to walk on every full collection, this is one. Whatever a store
    hands out through the ``Store`` API is a :class:`TaskRecord` made by
    :meth:`to_record`, a snapshot.

    ``args`` is kept as a tuple (which the garbage collector leaves alone when it holds
    plain values); :meth:`to_record` hands out a list.

    Its fields may be given by position, in the order of the constructor's parameters
    (what ``add_task()`` does: building an instance of a class from keyword arguments
    costs Python a dictionary per call, about twice the time of the whole call by
    position).
    """

    __slots__ = (
        "args",
        "attempt",
        "cancel_requested",
        "created_at",
        "error",
        "finished_at",
        "func_name",
        "idempotency_key",
        "kwargs",
        "max_retries",
        "owner",
        "priority",
        "progress",
        "queue",
        "requeue_on_interrupt",
        "result",
        "started_at",
        "status",
        "tags",
        "task_id",
        "updated_at",
    )

    def __init__(
        self,
        task_id: str,
        func_name: str,
        created_at: datetime,
        status: TaskStatus = TaskStatus.PENDING,
        queue: str = "default",
        priority: int = 0,
        args: list[Any] | tuple[Any, ...] | None = _EMPTY_ARGS,
        kwargs: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        attempt: int = 0,
        max_retries: int = 0,
        requeue_on_interrupt: bool = False,
        updated_at: datetime | None = None,
        owner: str | None = None,
    ) -> None:
        self.task_id = task_id
        self.func_name = func_name
        self.status = status
        self.queue = queue
        self.priority = priority
        self.args = args
        self.kwargs: Mapping[str, Any] | None = kwargs or NO_ENTRIES
        self.tags: Mapping[str, str] = tags or NO_ENTRIES
        self.idempotency_key = idempotency_key
        self.attempt = attempt
        self.max_retries = max_retries
        self.requeue_on_interrupt = requeue_on_interrupt
        self.created_at = created_at
        self.updated_at = updated_at if updated_at is not None else created_at
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.error: str | None = None
        self.result: Any = None
        self.progress: float | None = None
        self.cancel_requested = False
        self.owner = owner

    @classmethod
    def from_record(cls, record: TaskRecord) -> LiveRecord:
        """A live copy of ``record`` (its ``logs`` left out); shares no mutable value."""
        live = cls.__new__(cls)
        values = record.__dict__
        for name in LIVE_FIELDS:
            setattr(live, name, values[name])
        live.args = tuple(record.args) if record.args is not None else None
        live.kwargs = dict(record.kwargs) if record.kwargs is not None else None
        live.tags = dict(record.tags)
        return live

    def to_record(self, logs: list[LogEntry] | None = None) -> TaskRecord:
        """A :class:`TaskRecord` snapshot of this record now (``logs``: its logs, else
        none), unvalidated: every value was checked when it was written."""
        args = self.args
        kwargs = self.kwargs
        data = {
            "task_id": self.task_id,
            "func_name": self.func_name,
            "status": self.status,
            "queue": self.queue,
            "priority": self.priority,
            "args": list(args) if args is not None else None,
            "kwargs": dict(kwargs) if kwargs is not None else None,
            "tags": dict(self.tags),
            "idempotency_key": self.idempotency_key,
            "attempt": self.attempt,
            "max_retries": self.max_retries,
            "requeue_on_interrupt": self.requeue_on_interrupt,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
            "result": self.result,
            "progress": self.progress,
            "cancel_requested": self.cancel_requested,
            "owner": self.owner,
            "logs": logs if logs is not None else [],
        }
        return from_fields(TaskRecord, data, every_field(TaskRecord))

    def __repr__(self) -> str:
        return f"LiveRecord(task_id={self.task_id!r}, status={self.status.value!r})"


LIVE_FIELDS = tuple(sorted(LiveRecord.__slots__))
"""The fields of a :class:`LiveRecord`: every field of :class:`TaskRecord` but ``logs``."""


class TaskUpdate(BaseModel):
    """Fields to change on a record; only the fields you set are written."""

    attempt: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    result: Any = None
    progress: float | None = None
    cancel_requested: bool | None = None
    owner: str | None = None

    def changes(self) -> dict[str, Any]:
        """Return only the fields that were set, as ``{name: value}``."""
        values = self.__dict__
        return {name: values[name] for name in self.__pydantic_fields_set__}


class CreateResult(BaseModel):
    """What :meth:`Store.create` did: ``created`` is False when an active task already
    held the idempotency key, and ``record`` is then that existing task."""

    record: TaskRecord
    created: bool


SEARCH_MAX = 200
"""The longest text search (:attr:`TaskQuery.q`), in characters."""


def _within_search_max(value: str) -> str:
    # Checked here rather than by ``Field(max_length=)``: pydantic's own check refuses
    # a text holding a lone surrogate (argv decoded with surrogateescape) as "not a
    # valid string", where every other text filter finds nothing.
    if len(value) > SEARCH_MAX:
        raise PydanticCustomError(
            "string_too_long",
            "String should have at most {max_length} characters",
            {"max_length": SEARCH_MAX},
        )
    return value


SearchText = Annotated[str, AfterValidator(_within_search_max)]
"""A text search of at most :data:`SEARCH_MAX` characters (``TaskQuery.q``, the admin
API's ``q``)."""


class TaskQuery(BaseModel):
    """A filter over the task list, newest first, keyset-paginated.

    All filters combine with AND; ``tags`` matches tasks carrying every given pair.
    ``cursor`` is the ``next_cursor`` of the previous page. A field it does not have is
    an error (``status=`` for ``statuses=`` would otherwise filter nothing).
    """

    model_config = ConfigDict(extra="forbid")

    statuses: list[TaskStatus] | None = None
    func_name: str | None = None
    queue: str | None = None
    tags: dict[str, str] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    q: SearchText | None = None
    """Text search: keeps tasks where ``q`` occurs in the function name, the task id,
    the error, or a tag key or value (case-insensitive for ASCII letters; see
    :func:`matches_text`); at most :data:`SEARCH_MAX` characters. None or empty: no
    text filter."""
    limit: int = Field(default=50, ge=1, le=1000)
    cursor: str | None = None


class TaskPage(BaseModel):
    """One page of a task list; ``next_cursor`` is None on the last page."""

    items: list[TaskRecord]
    next_cursor: str | None = None


class TaskStats(BaseModel):
    """Counts computed by the store, not by loading records."""

    total: int = 0
    by_status: dict[TaskStatus, int] = Field(default_factory=dict)
    by_func: dict[str, dict[TaskStatus, int]] = Field(default_factory=dict)


DURATION_STATUSES = frozenset({TaskStatus.SUCCESS, TaskStatus.FAILED})
"""Statuses whose tasks count in :meth:`Store.durations`: a finished attempt with both
``started_at`` and ``finished_at`` set."""

DURATION_WINDOW = 1000
"""A store computes durations over at least this many of each function's most recently
finished tasks; it may use more (all of them)."""


class DurationStats(BaseModel):
    """Run time percentiles of one function's finished tasks, in seconds.

    Percentiles are nearest-rank: ``p50`` is the value at 1-based rank ``ceil(0.5 * count)``
    of the durations sorted ascending (see :func:`nearest_rank`), so it is always one of
    the measured durations and every store agrees exactly.
    """

    count: int
    p50: float
    p95: float
    p99: float


class ThroughputBucket(BaseModel):
    """Tasks that finished SUCCESS or FAILED within one time bucket.

    ``bucket_start`` is a multiple of the bucket size since the Unix epoch (see
    :func:`bucket_start`); the bucket covers ``[bucket_start, bucket_start + size)``.
    """

    bucket_start: datetime
    succeeded: int = 0
    failed: int = 0


class Claim(BaseModel):
    """A queued task handed to one owner by :meth:`Backend.claim`."""

    task_id: str
    queue: str
    priority: int


@dataclass(frozen=True, slots=True)
class Transition:
    """One compare-and-set for :meth:`Store.transition_many`: move ``task_id`` to
    ``new`` if its status is in ``expected``, applying ``update`` in the same step.

    ``read_back=False`` says the caller needs only to know whether the change was
    applied (the engine's outcome writes when nobody listens for events): the store
    may then answer :data:`APPLIED` instead of reading the record back.
    """

    task_id: str
    expected: frozenset[TaskStatus]
    new: TaskStatus
    update: TaskUpdate | None = None
    read_back: bool = True


class Applied(Enum):
    """The answer to a :class:`Transition` with ``read_back=False`` that was applied."""

    APPLIED = "applied"


APPLIED = Applied.APPLIED
"""A change made with ``read_back=False`` was applied; its record was not read back."""


M = TypeVar("M", bound=BaseModel)

_DEFAULTS: dict[type[BaseModel], tuple[dict[str, Any], list[tuple[str, Any]]]] = {}


def construct(model: type[M], /, **values: Any) -> M:
    """Build ``model`` from values that already have the right types, unvalidated.

    For the engine's hot path (a record or update per transition), where every value
    was made by taskflow itself: it skips validation like ``model_construct`` but at a
    fraction of its cost. Missing fields get their defaults (factories are called).
    The result is an ordinary model: ``__pydantic_fields_set__`` holds the given names,
    so ``TaskUpdate.changes()`` sees exactly them. A :class:`TaskRecord` gets the shared
    :func:`every_field` set instead (nothing reads which fields of a record were set).
    """
    found = _DEFAULTS.get(model)
    if found is None:
        static = {}
        factories = []
        for name, info in model.model_fields.items():
            if info.default_factory is not None:
                factories.append((name, cast(Callable[[], Any], info.default_factory)))
            elif not info.is_required():
                static[name] = info.default
        found = _DEFAULTS[model] = (static, factories)
    static, factories = found
    data = static.copy()
    for name, factory in factories:
        if name not in values:
            data[name] = factory()
    data.update(values)
    return from_fields(model, data, _EVERY_FIELD.get(model) or set(values))


def from_fields(model: type[M], data: dict[str, Any], fields_set: set[str]) -> M:
    """Make ``data`` (every field of ``model``, values of the right types) the state of a
    new, unvalidated ``model``; ``data`` and ``fields_set`` then belong to it."""
    obj = model.__new__(model)
    _set_state(obj, "__dict__", data)
    _set_state(obj, "__pydantic_fields_set__", fields_set)
    _set_state(obj, "__pydantic_extra__", None)
    _set_state(obj, "__pydantic_private__", None)
    return obj


_set_state = object.__setattr__


def copy_with(record: M, changes: Mapping[str, Any]) -> M:
    """Return a shallow copy of ``record`` with ``changes`` applied, unvalidated
    (``model_copy(update=...)`` at half its cost; the values are taskflow's own)."""
    data = record.__dict__.copy()
    data.update(changes)
    return from_fields(type(record), data, fields_set_with(record, changes.keys()))


def fields_set_with(model: BaseModel, names: Iterable[str]) -> set[str]:
    """The ``__pydantic_fields_set__`` of a copy of ``model`` that also sets ``names``:
    the shared :func:`every_field` set stays shared (one set for every record, not one
    per copy)."""
    current = model.__pydantic_fields_set__
    if current is _EVERY_FIELD.get(type(model)):
        return current
    return current | set(names)


def every_field(model: type[BaseModel]) -> set[str]:
    """The names of all fields of ``model``, as one set shared by the records built on
    the engine's hot path (see :func:`construct`).

    It stands in for each record's ``__pydantic_fields_set__``: a set per record (and
    per copy) costs memory and garbage-collector time, and nothing reads it. Assigning
    an attribute adds its name to the set, which changes nothing: every name is in it.
    """
    found = _EVERY_FIELD.get(model)
    if found is None:
        found = _EVERY_FIELD[model] = set(model.model_fields)
    return found


_EVERY_FIELD: dict[type[BaseModel], set[str]] = {}


def encode_cursor(created_at: datetime, task_id: str) -> str:
    """Encode the keyset position after ``(created_at, task_id)`` as an opaque cursor."""
    raw = json.dumps([created_at.isoformat(), task_id]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Decode a cursor made by :func:`encode_cursor`.

    The time comes back in UTC. A cursor's time always has an offset (``created_at``
    is timezone-aware): one without (a naive time, a date alone) or one that leaves the
    range of ``datetime`` once in UTC (``9999-12-31T23:59:59-23:59``) cannot have been
    made by ``encode_cursor`` and is refused like any other made-up cursor, so every
    backend answers it alike.

    Raises:
        InvalidOperationError: (a ``ValueError``) the cursor was not made by
            ``encode_cursor``.
    """
    try:
        created, task_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not isinstance(task_id, str) or "\x00" in task_id:
            raise TypeError("not a task id")
        task_id.encode("utf-8")  # a lone surrogate: no task id has one
        return _utc_cursor_time(created), task_id
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidOperationError(f"malformed task list cursor {cursor!r}") from exc


def _utc_cursor_time(created: object) -> datetime:
    """The cursor's time in UTC; TypeError, ValueError or OverflowError for anything but
    an ISO 8601 time with an offset that stays in range in UTC."""
    if not isinstance(created, str):
        raise TypeError("not a time")
    when = datetime.fromisoformat(created)
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("a cursor's time needs an offset")
    return when.astimezone(timezone.utc)


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
"""1970-01-01 UTC: throughput buckets are aligned on multiples of their width since it."""
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def fold_text(text: str) -> str:
    """Lower-case the ASCII letters of ``text`` and nothing else (how ``q`` compares)."""
    return text.translate(_ASCII_LOWER)


def matches_text(record: TaskRecord | LiveRecord, q: str | None) -> bool:
    """True when ``q`` occurs in the record's func name, id, error, or a tag key or value.

    The reference for :attr:`TaskQuery.q`: comparison folds ASCII letters only; an empty
    or None ``q`` matches every record.
    """
    if not q:
        return True
    needle = fold_text(q)
    fields = [record.func_name, record.task_id, record.error or ""]
    fields += [part for pair in record.tags.items() for part in pair]
    return any(needle in fold_text(field) for field in fields)


PERCENTILES = (0.5, 0.95, 0.99)
"""The fractions behind ``p50``, ``p95`` and ``p99``."""


def nearest_rank(count: int, fraction: float) -> int:
    """Return the 0-based index of the nearest-rank percentile among ``count`` values.

    That is 1-based rank ``ceil(fraction * count)``, at least 1 (SQL's
    ``percentile_disc``); for an ordered-offset query use it as the ``OFFSET``.
    ``fraction`` is used to four decimal places.
    """
    scaled = round(fraction * 10_000)  # exact integer arithmetic, as a database would
    return min(max(1, -(-scaled * count // 10_000)), count) - 1


def duration_stats(durations: list[float]) -> DurationStats:
    """Build :class:`DurationStats` from durations in seconds (any order, non-empty)."""
    ordered = sorted(durations)
    p50, p95, p99 = (ordered[nearest_rank(len(ordered), f)] for f in PERCENTILES)
    return DurationStats(count=len(ordered), p50=p50, p95=p95, p99=p99)


def bucket_start(moment: datetime, bucket_seconds: int) -> datetime:
    """Return the start of the ``bucket_seconds``-wide bucket holding ``moment``.

    Buckets are aligned on multiples of ``bucket_seconds`` since the Unix epoch (UTC).
    """
    micros = (moment - EPOCH) // timedelta(microseconds=1)
    width = bucket_seconds * 1_000_000
    return EPOCH + timedelta(microseconds=micros - micros % width)


every_field(TaskRecord)  # records and log lines built by construct() share one fields set each
every_field(LogEntry)
