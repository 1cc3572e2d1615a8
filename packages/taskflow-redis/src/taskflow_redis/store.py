"""The Store half: task records, their status, logs, queries and counters."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from fastapi_taskflow.errors import IdempotencyKeyHeldError
from fastapi_taskflow.key_taking import check_take_key, keyless_error
from fastapi_taskflow.limits import storable_names, storable_text, unmatchable
from fastapi_taskflow.models import (
    APPLIED,
    Applied,
    CreateResult,
    DurationStats,
    LogEntry,
    TaskPage,
    TaskQuery,
    TaskRecord,
    TaskStats,
    TaskStatus,
    TaskUpdate,
    ThroughputBucket,
    Transition,
    bucket_start,
    construct,
    decode_cursor,
    encode_cursor,
    fold_text,
)

from .base import RedisBase, logger
from .codec import (
    STATUS_VALUE,
    CorruptValue,
    as_str,
    decode_logs,
    decode_record,
    dumps_compact,
    encode_log,
    encode_record,
    encode_update,
    frame,
    iso_utc,
    pairs,
    validate_record,
    with_logs,
)
from .connection import driver_errors
from .errors import RedisBackendError
from .keys import from_micros, micros, padded

__all__ = ["RedisStore"]

CREATE_BATCH = 500
"""Records per ``write.lua`` call, so one script never blocks the server for long."""

WRITE_BATCH = 1000
"""Records and changes in all per ``write.lua`` call (a group commit larger than this
takes more than one round trip, so one script never blocks the server for long)."""

QUERY_BUDGET = 20_000
"""Index members one query call may examine before returning a short page."""

COUNT_BUCKETS = 1000
"""Up to this many buckets, throughput() counts each with ZCOUNT; beyond, it scans."""

AUTO_PURGE = 2
"""Expired finished tasks removed by each transition to a terminal status."""

_Change = tuple[str, str, str, TaskUpdate | None, bool]
"""One item of the changes side of ``write.lua``: id, expected, new status, update, and
whether the record is read back (``Transition.read_back``)."""


def _calls(
    records: Sequence[TaskRecord], changes: Sequence[_Change]
) -> list[tuple[Sequence[TaskRecord], Sequence[_Change]]]:
    """Cut a write into script calls of at most ``CREATE_BATCH`` records and
    ``WRITE_BATCH`` items, in order: records first, the changes after the last of them
    (in the same call when there is room)."""
    calls: list[tuple[Sequence[TaskRecord], Sequence[_Change]]] = [
        (records[start : start + CREATE_BATCH], ())
        for start in range(0, len(records), CREATE_BATCH)
    ]
    start = 0
    if calls and changes:
        last = calls[-1][0]
        start = WRITE_BATCH - len(last)
        calls[-1] = (last, changes[:start])
    calls += [
        ((), changes[at : at + WRITE_BATCH]) for at in range(start, len(changes), WRITE_BATCH)
    ]
    return calls


_EXPECTED: dict[frozenset[TaskStatus], str] = {}
"""``_expected`` of each set of statuses seen (at most one entry per subset of statuses)."""


def _expected(statuses: Collection[TaskStatus]) -> str:
    """The ``expected`` of a change in ``write.lua``: ``,a,b,``."""
    if type(statuses) is frozenset:
        found = _EXPECTED.get(statuses)
        if found is None:
            found = _EXPECTED[statuses] = _expected_text(statuses)
        return found
    return _expected_text(statuses)


def _expected_text(statuses: Collection[TaskStatus]) -> str:
    return "," + ",".join(sorted(TaskStatus(s).value for s in statuses)) + ","


def _status_value(status: TaskStatus) -> str:
    """The stored text of ``status``."""
    return STATUS_VALUE.get(status) or TaskStatus(status).value


def _is_marker(value: Any) -> bool:
    return isinstance(value, (bytes, str)) and as_str(value) == "corrupt"


class RedisStore(RedisBase):
    """The Store protocol over Lua scripts; each method is one atomic round trip."""

    def _decode(self, raw: Any, task_id: str) -> TaskRecord | None:
        """Decode a record reply, or report it and return None when it is not ours."""
        if _is_marker(raw):
            logger.warning(
                "skipped task %s: the Redis key %s holds a value that is not a taskflow "
                "record (a foreign or corrupt value under the prefix)",
                task_id,
                self._keys.task(task_id),
            )
            return None
        if not raw:
            return None
        try:
            return decode_record(raw)
        except CorruptValue as exc:
            logger.warning(
                "skipped task %s: the Redis hash %s is corrupt (%s)",
                task_id,
                self._keys.task(task_id),
                exc,
            )
            return None

    async def create(self, record: TaskRecord) -> CreateResult:
        """See :meth:`fastapi_taskflow.protocols.Store.create`."""
        return (await self.create_many([record]))[0]

    async def create_many(self, records: Sequence[TaskRecord]) -> list[CreateResult]:
        """See :meth:`fastapi_taskflow.protocols.Store.create_many`.

        Up to 500 records go in one script call (one round trip, atomic as a batch).
        """
        return (await self._write_records(records, (), "creating tasks"))[0]

    def _create_result(self, record: TaskRecord, line: str) -> CreateResult:
        if line == "~":
            logger.warning(
                "replaced a value that was not a taskflow record at Redis key %s",
                self._keys.task(record.task_id),
            )
        if line in ("+", "~"):
            stored = record.model_copy(update={"logs": []}) if record.logs else record
            return construct(CreateResult, record=stored, created=True)
        existing = self._decode(line, record.task_id)
        if existing is None:
            raise RedisBackendError(
                f"cannot create task {record.task_id}: the record that holds its id or "
                f"idempotency key {record.idempotency_key!r} is corrupt; delete it with "
                "redis-cli or use another idempotency key"
            )
        return CreateResult(record=existing, created=False)

    async def get(self, task_id: str) -> TaskRecord | None:
        """See :meth:`fastapi_taskflow.protocols.Store.get`.

        A value under the task's key that is not a taskflow record is reported with a
        warning and treated as absent.
        """
        if not storable_text(task_id):  # no task has it; it cannot be sent as UTF-8
            return None
        raw, logs = await self._run("get", [task_id], f"reading task {task_id}")
        if logs and not _is_marker(logs) and raw and not _is_marker(raw):
            whole = with_logs(raw, logs)  # one validation for the record and its logs
            if whole is not None:
                return whole
        record = self._decode(raw, task_id)
        if record is None:
            return None
        if _is_marker(logs):
            logger.warning("ignored the corrupt log list %s", self._keys.logs(task_id))
            return record
        record.logs = decode_logs(logs, task_id)
        return record

    async def find_by_key(self, idempotency_key: str) -> TaskRecord | None:
        """See :meth:`fastapi_taskflow.protocols.Store.find_by_key`."""
        if not storable_text(idempotency_key):  # no task has it; it cannot be sent as UTF-8
            return None
        reply = await self._run(
            "find_key", [idempotency_key], f"looking up idempotency key {idempotency_key!r}"
        )
        if not reply:
            return None
        return self._decode(reply[1], as_str(reply[0]))

    async def transition(
        self,
        task_id: str,
        *,
        expected: Collection[TaskStatus],
        new: TaskStatus,
        update: TaskUpdate | None = None,
        take_key: bool = False,
    ) -> TaskRecord | None:
        """See :meth:`fastapi_taskflow.protocols.Store.transition`.

        A transition to a terminal status also deletes up to two tasks that finished
        longer than ``retention`` ago, so memory stays bounded without a sweeper.
        ``take_key=True`` runs ``take_key.lua``: the same change, with the key's holder
        checked and set in the same script call.
        """
        if take_key:
            check_take_key(new)
        if not expected:
            return None
        item = (task_id, _expected(expected), _status_value(new), update, True)
        if take_key:
            return await self._change_taking_key(item)
        return await self._change_one(item, f"updating task {task_id}")

    async def _change_taking_key(self, item: _Change) -> TaskRecord | None:
        """Run ``take_key.lua`` for one change read back (see :meth:`transition`)."""
        task_id = item[0]
        now = self.clock.now()
        sets = dumps_compact(_encoded_change(item, '"' + iso_utc(now) + '"'))
        cutoff = self._retention_cutoff(now)
        reply = await self._run(
            "take_key", [cutoff, AUTO_PURGE, sets], f"retrying task {task_id} with its key"
        )
        verdict = as_str(reply[0])
        if verdict == "held":
            raise IdempotencyKeyHeldError(task_id, as_str(reply[2]), as_str(reply[1]))
        if verdict == "nokey":
            raise keyless_error(task_id)
        (changed,) = self._changed([item], frame(reply[1], 1))
        if isinstance(changed, Applied):  # pragma: no cover - read back, as the item asks
            raise TypeError("a change read back was answered without its record")
        return changed

    async def transition_many(
        self, transitions: Sequence[Transition]
    ) -> list[TaskRecord | Applied | None]:
        """See :meth:`fastapi_taskflow.protocols.Store.transition_many`.

        Up to 1,000 transitions go in one script call: one round trip for the batch,
        atomic as a whole. Items with an empty ``expected`` are answered None without
        being sent; an item with ``read_back=False`` is answered ``APPLIED`` without
        its record being read or sent back.
        """
        return (await self.write_many((), transitions))[1]

    async def write_many(
        self, creates: Sequence[TaskRecord], transitions: Sequence[Transition]
    ) -> tuple[list[CreateResult], list[TaskRecord | Applied | None]]:
        """See :meth:`fastapi_taskflow.protocols.Store.write_many`.

        One script call, so one round trip, atomic as a whole, when the write holds at
        most 500 records and 1,000 items in all (a group commit of the engine, as a
        rule); a larger one is cut into such calls, sent one after the other, records
        first. Transitions with an empty ``expected`` are answered None without being
        sent.
        """
        results: list[TaskRecord | Applied | None] = [None] * len(transitions)
        sent: list[int] = []
        items: list[_Change] = []
        for index, change in enumerate(transitions):
            if change.expected:
                sent.append(index)
                new = _status_value(change.new)
                expected = _expected(change.expected)
                items.append((change.task_id, expected, new, change.update, change.read_back))
        action = "updating tasks" if not creates else "creating tasks"
        if creates and items:
            action = "creating and updating tasks"
        created, written = await self._write_records(creates, items, action)
        for index, record in zip(sent, written, strict=True):
            results[index] = record
        return created, results

    async def update(self, task_id: str, update: TaskUpdate) -> TaskRecord | None:
        """See :meth:`fastapi_taskflow.protocols.Store.update`."""
        item = (task_id, "*", "", update, True)
        return await self._change_one(item, f"updating task {task_id}")

    async def _change_one(self, item: _Change, action: str) -> TaskRecord | None:
        """Apply one change that reads its record back; that record, or None."""
        (changed,) = (await self._write_records((), [item], action))[1]
        if isinstance(changed, Applied):  # pragma: no cover - read_back=True items
            raise TypeError("a change read back was answered without its record")
        return changed

    async def _write_records(
        self, records: Sequence[TaskRecord], changes: Sequence[_Change], action: str
    ) -> tuple[list[CreateResult], list[TaskRecord | Applied | None]]:
        """Run ``write.lua``: insert ``records``, then apply ``(id, expected, new,
        update, read_back)`` changes, in order, in as few script calls as the batch
        limits allow."""
        created: list[CreateResult] = []
        changed: list[TaskRecord | Applied | None] = []
        if not records and not changes:
            return created, changed
        now = self.clock.now()
        stamp = '"' + iso_utc(now) + '"'
        cutoff = self._retention_cutoff(now)
        keys = self._keys
        for batch, chunk in _calls(records, changes):
            inserts = ""
            if batch:
                flat: list[str | int] = []
                for record in batch:
                    flat += encode_record(record, keys)
                inserts = dumps_compact(flat)
            sets = ""
            if chunk:
                items: list[str | int] = []
                for change in chunk:
                    items += _encoded_change(change, stamp)
                sets = dumps_compact(items)
            reply = await self._run("write", [cutoff, AUTO_PURGE, inserts, sets], action)
            if batch:
                for record, line in zip(batch, frame(reply[0], len(batch)), strict=True):
                    created.append(self._create_result(record, line))
            if chunk:
                changed += self._changed(chunk, frame(reply[1], len(chunk)))
        return created, changed

    def _changed(
        self, chunk: Sequence[_Change], lines: list[str]
    ) -> list[TaskRecord | Applied | None]:
        """The records that the reply lines of ``chunk`` describe (None: not changed;
        ``APPLIED``: a quiet item changed)."""
        out: list[TaskRecord | Applied | None] = []
        for (task_id, *_), line in zip(chunk, lines, strict=True):
            if line == "":
                out.append(None)
            elif line == "+":
                out.append(APPLIED)
            elif line == "!":
                out.append(self._decode(b"corrupt", task_id))
            else:
                try:
                    out.append(validate_record(line))
                except ValueError:  # reported (with the reason) by _decode
                    out.append(self._decode(line, task_id))
        return out

    async def owners(self) -> set[str]:
        """See :meth:`fastapi_taskflow.protocols.Store.owners`.

        One ``SMEMBERS`` of the set of owners holding an active task, which every write
        that changes a status or an owner keeps up to date (never a scan of the tasks).
        """
        client = self._redis()
        with driver_errors("listing task owners", self._where()):
            members = await client.smembers(self._keys.owners)
        return {as_str(member) for member in members}

    async def owned(self, owner: str, *, limit: int = 100) -> list[str]:
        """See :meth:`fastapi_taskflow.protocols.Store.owned`.

        One ``ZRANGE`` of the owner's index of active tasks, whose members sort by
        ``created_at`` then id; ids only, so a corrupt record is listed too.
        """
        if limit <= 0:
            return []
        client = self._redis()
        with driver_errors(f"listing the tasks of {owner!r}", self._where()):
            members = await client.zrange(self._keys.owned(owner), 0, limit - 1)
        return [as_str(member)[18:] for member in members]

    async def adopt(self, task_id: str, *, owner: str, new_owner: str | None) -> TaskRecord | None:
        """See :meth:`fastapi_taskflow.protocols.Store.adopt`."""
        args = [task_id, owner, new_owner or "", dumps_compact(new_owner)]
        reply = await self._run("adopt", args, f"adopting task {task_id}")
        code = int(reply[0])
        if code == -1:
            return self._decode(b"corrupt", task_id)
        if code == 0:
            return None
        return self._decode(reply[1], task_id)

    async def append_logs(self, task_id: str, entries: Sequence[LogEntry]) -> None:
        """See :meth:`fastapi_taskflow.protocols.Store.append_logs`."""
        if not entries:
            return
        args = [task_id, *(encode_log(entry) for entry in entries)]
        if int(await self._run("append_logs", args, f"appending logs to {task_id}")) < 0:
            logger.warning(
                "dropped %d log entries of task %s: the Redis key %s is not a list",
                len(entries),
                task_id,
                self._keys.logs(task_id),
            )

    async def query(self, query: TaskQuery) -> TaskPage:
        """See :meth:`fastapi_taskflow.protocols.Store.query`.

        Served from sorted-set indexes: the smallest matching index is walked newest
        first and the other filters are checked per member, in one script call. When
        very selective filters make a call examine more than 20,000 index entries, the
        page may come back short with a ``next_cursor`` to continue from.
        """
        keys = self._keys
        upper = "+"
        if query.created_before is not None:
            upper = "(" + padded(micros(query.created_before))
        if query.cursor:
            created, last_id = decode_cursor(query.cursor)
            bound = "(" + keys.member(created, last_id)
            if upper == "+" or bound < upper:
                upper = bound
        if unmatchable(query):  # it could not even be sent as UTF-8
            return TaskPage(items=[])
        lower = "-" if query.created_after is None else "[" + padded(micros(query.created_after))
        statuses = sorted({TaskStatus(s).value for s in query.statuses or ()})
        ands = []
        if query.func_name is not None:
            ands.append(keys.func_index(query.func_name))
        if query.queue is not None:
            ands.append(keys.queue_index(query.queue))
        ands += [keys.tag_index(k, v) for k, v in sorted((query.tags or {}).items())]
        want = query.limit + 1
        args: list[str | int] = [want, upper, lower, QUERY_BUDGET, len(statuses)]
        args += [keys.status_index(s) for s in statuses]
        args += [len(ands), *ands, fold_text(query.q or "")]
        reply = await self._run("query", args, "querying tasks")
        resume = as_str(reply[0])
        hits = [(as_str(reply[i]), reply[i + 1]) for i in range(1, len(reply) - 1, 2)]
        items: list[TaskRecord] = []
        for member, raw in hits[: query.limit]:
            record = self._decode(raw, member[18:])
            if record is not None:
                items.append(record)
        next_cursor = None
        if len(hits) > query.limit:
            next_cursor = self._cursor(hits[query.limit - 1][0], items)
        elif resume:
            next_cursor = self._cursor(resume, items)
        return TaskPage(items=items, next_cursor=next_cursor)

    @staticmethod
    def _cursor(member: str, items: list[TaskRecord]) -> str:
        task_id = member[18:]
        if items and items[-1].task_id == task_id:
            return encode_cursor(items[-1].created_at, task_id)
        return encode_cursor(from_micros(int(member[:17])), task_id)

    async def stats(self) -> TaskStats:
        """See :meth:`fastapi_taskflow.protocols.Store.stats`.

        Read from counters that every write maintains in the same script.
        """
        by_status_raw, by_func_raw = await self._run("stats", [], "reading task counts")
        by_status: dict[TaskStatus, int] = {}
        for name, count in pairs(by_status_raw).items():
            status = self._status(name)
            if status is not None and int(count) > 0:
                by_status[status] = int(count)
        by_func: dict[str, dict[TaskStatus, int]] = {}
        for field, count in pairs(by_func_raw).items():
            name, _, func = field.partition(":")
            status = self._status(name)
            if status is not None and int(count) > 0:
                by_func.setdefault(func, {})[status] = int(count)
        return TaskStats(total=sum(by_status.values()), by_status=by_status, by_func=by_func)

    async def durations(
        self, *, func_names: Collection[str] | None = None
    ) -> dict[str, DurationStats]:
        """See :meth:`fastapi_taskflow.protocols.Store.durations`.

        Each finish script keeps the function's 1,000 most recent run times in a sorted
        set scored by duration; percentiles are read by rank (``ZRANGE i i``).
        """
        names = ["*"] if func_names is None else storable_names(func_names)
        if not names:
            return {}
        reply = await self._run("durations", names, "reading task durations")
        found: dict[str, DurationStats] = {}
        for i in range(0, len(reply) - 4, 5):
            p50, p95, p99 = (int(float(as_str(v))) / 1_000_000 for v in reply[i + 2 : i + 5])
            found[as_str(reply[i])] = DurationStats(
                count=int(reply[i + 1]), p50=p50, p95=p95, p99=p99
            )
        return found

    async def throughput(
        self, *, since: datetime, until: datetime, bucket_seconds: int
    ) -> list[ThroughputBucket]:
        """See :meth:`fastapi_taskflow.protocols.Store.throughput`.

        Finished SUCCESS and FAILED tasks are kept in sorted sets by finish time: each
        bucket is two ``ZCOUNT`` calls (or, beyond 1,000 buckets, one range scan).
        """
        if until <= since:
            return []
        width = timedelta(seconds=bucket_seconds)
        first = bucket_start(since, bucket_seconds)
        starts: list[datetime] = []
        start = first
        while start < until and len(starts) <= COUNT_BUCKETS:
            starts.append(start)
            start += width
        low, high = micros(since), micros(until)
        if len(starts) <= COUNT_BUCKETS:
            args: list[str] = ["count"]
            for start in starts:
                lo = max(micros(start), low)
                hi = min(micros(start + width), high)
                args += [str(lo), f"({hi}"]
            reply = await self._run("throughput", args, "counting finished tasks")
            return [
                ThroughputBucket(bucket_start=start, succeeded=int(ok), failed=int(bad))
                for start, ok, bad in zip(starts, reply[0::2], reply[1::2], strict=True)
                if int(ok) or int(bad)
            ]
        scan = ["scan", str(low), f"({high}", str(micros(first)), str(bucket_seconds * 1_000_000)]
        reply = await self._run("throughput", scan, "counting finished tasks")
        return [
            ThroughputBucket(
                bucket_start=first + width * int(reply[i]),
                succeeded=int(reply[i + 1]),
                failed=int(reply[i + 2]),
            )
            for i in range(0, len(reply) - 2, 3)
        ]

    def _status(self, name: str) -> TaskStatus | None:
        try:
            return TaskStatus(name)
        except ValueError:
            logger.warning("ignored an unknown status %r in the Redis task counters", name)
            return None

    async def purge(self, *, finished_before: datetime, batch_size: int = 1000) -> int:
        """See :meth:`fastapi_taskflow.protocols.Store.purge`.

        Removes the tasks with their logs, index entries, counters and idempotency keys
        in one script call; also forgets one-off schedule run keys older than
        ``retention``.
        """
        if batch_size <= 0:
            return 0
        args: list[str | int] = [
            str(micros(finished_before)),
            batch_size,
            self._retention_cutoff(self.clock.now()),
        ]
        return int(await self._run("purge", args, "purging finished tasks"))


def _encoded_change(change: _Change, stamp: str) -> list[str | int]:
    """One change as an item of ``transition_batch`` (``write.lua``, ``take_key.lua``);
    ``stamp`` is the JSON of its ``updated_at``."""
    task_id, expected, new, update, read_back = change
    fin, owner, fields = encode_update(update, stamp)
    return [task_id, expected, new, fin, owner, "" if read_back else "1", len(fields) // 2, *fields]
