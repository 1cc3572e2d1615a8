"""The Store half: creating tasks, compare-and-set transitions, updates and logs."""

from __future__ import annotations

import zlib
from collections.abc import Collection, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Row, bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from fastapi_taskflow.clock import Clock
from fastapi_taskflow.errors import IdempotencyKeyHeldError, InvalidOperationError, TaskflowError
from fastapi_taskflow.key_taking import check_take_key, keyless_error
from fastapi_taskflow.limits import storable_text
from fastapi_taskflow.models import (
    ACTIVE_STATUSES,
    KEY_RELEASING_STATUSES,
    CreateResult,
    LogEntry,
    TaskRecord,
    TaskStatus,
    TaskUpdate,
    construct,
)

from .context import SQLContext, Tx, WriteOp
from .dialect import insert_if_absent
from .errors import SQLBackendError, wrap_error
from .executor import Executor
from .fastget import PostgresGet, SQLiteReader
from .oversized import entry_texts, record_texts, sized, update_texts
from .pg_writes import PostgresWrites
from .rows import (
    fast_record,
    key_hash,
    log_values,
    normalized,
    record_columns,
    record_values,
    row_to_log,
    row_to_record,
    tag_token,
    update_values,
)
from .schema import Tables
from .sqlite_create import create_batch_op
from .statements import pg_create, pg_transition, task_change

__all__ = ["SQLStore"]

_CREATE_ATTEMPTS = 5


class SQLStore:
    """Store operations; mixed into :class:`taskflow_sql.SQLBackend`."""

    clock: Clock
    _ctx: SQLContext
    _exec: Executor
    _reader: SQLiteReader | None = None
    _pg_get: PostgresGet | None = None
    _pg_write: PostgresWrites | None = None

    async def create(self, record: TaskRecord) -> CreateResult:
        """See :meth:`fastapi_taskflow.protocols.Store.create`.

        Atomicity comes from the database: the task id is the primary key and the
        idempotency key's hash sits in ``active_key`` under a UNIQUE index.
        """
        write = self._exec.write("creating a task", self._create_op(record), rows=_rows([record]))
        return await sized(self._ctx, write, lambda: record_texts([record]))

    async def create_many(self, records: Sequence[TaskRecord]) -> list[CreateResult]:
        """See :meth:`fastapi_taskflow.protocols.Store.create_many`.

        On SQLite (one operation of the group-commit writer) and MySQL/MariaDB a batch
        of distinct records is a probe and one multi-row insert
        (:mod:`taskflow_sql.sqlite_create`); on PostgreSQL a batch of distinct, tag-less
        records is one INSERT statement (with asyncpg: rows bound as arrays, see
        :mod:`taskflow_sql.pg_writes`; other drivers: one per 64 records, see
        :meth:`_create_fast`); otherwise the records share one transaction. Each
        record is always created whole or not at all.
        """
        if not records:
            return []
        if self._ctx.kind in ("sqlite", "mysql") and _distinct_batch(records):
            batches = [
                create_batch_op(records[i : i + _SQLITE_BATCH], self._create_op)
                for i in range(0, len(records), _SQLITE_BATCH)
            ]
            writes = self._exec.write_many("creating tasks", batches, rows=_rows(records))
            parts = await sized(self._ctx, writes, lambda: record_texts(records))
            return [result for part in parts for result in part]
        if self._pg_write is not None and _simple_batch(records):
            return await self._create_pg(self._pg_write, records)
        ops = [self._create_op(record) for record in records]
        if self._ctx.kind == "postgresql" and _simple_batch(records):
            results: list[CreateResult] = []
            for i in range(0, len(records), _FAST_BATCH):
                chunk = records[i : i + _FAST_BATCH]
                results += await self._create_fast(chunk, ops[i : i + _FAST_BATCH])
            return results
        return await sized(
            self._ctx, self._exec.write_many("creating tasks", ops), lambda: record_texts(records)
        )

    async def _create_pg(
        self, fast: PostgresWrites, records: Sequence[TaskRecord]
    ) -> list[CreateResult]:
        """PostgreSQL on asyncpg: the batch in one array-bound statement
        (:mod:`taskflow_sql.pg_writes`); a record whose id or key conflicted is then
        created (or found) the usual way, as in :meth:`_create_fast`."""
        found = await fast.create_new(records)
        results: list[CreateResult] = []
        for record, result in zip(records, found, strict=True):
            if result is None:
                result = await self._exec.write("creating a task", self._create_op(record))
            results.append(result)
        return results

    async def _create_fast(
        self, records: Sequence[TaskRecord], ops: list[WriteOp[CreateResult]]
    ) -> list[CreateResult]:
        """PostgreSQL: insert the whole batch and count it in one statement.

        A record whose id or key conflicted is then created (or found) the usual way,
        in its own transaction; as ids and keys are distinct within the batch, its
        conflict is with a task stored before, which is what it would meet in order.
        """
        stmt, params = self._pg_create_statement(records)

        async def single(conn: AsyncConnection) -> set[str]:
            return set((await conn.execute(stmt, params)).scalars())

        inserted = await self._exec.single("creating tasks", single)
        results: list[CreateResult] = []
        for record, op in zip(records, ops, strict=True):
            if record.task_id in inserted:
                results.append(construct(CreateResult, record=normalized(record), created=True))
            else:
                results.append(await self._exec.write("creating a task", op))
        return results

    def _creates_op(self, records: Sequence[TaskRecord]) -> WriteOp[list[CreateResult]]:
        """``create_many(records)`` as one write operation, for a caller that adds more
        to the same transaction (:meth:`taskflow_sql.SQLBackend.write_many`).

        The statements of :meth:`create_many`, run inside the transaction: on SQLite and
        MySQL/MariaDB the probe and multi-row insert of
        :mod:`taskflow_sql.sqlite_create` per 1,000 records; on PostgreSQL one
        INSERT per 64 records (:func:`taskflow_sql.statements.pg_create`), a record
        whose id or key conflicted then created the usual way in the same transaction;
        otherwise one record after the other.
        """
        parts: list[WriteOp[list[CreateResult]]]
        if self._ctx.kind in ("sqlite", "mysql") and _distinct_batch(records):
            parts = [
                create_batch_op(records[i : i + _SQLITE_BATCH], self._create_op)
                for i in range(0, len(records), _SQLITE_BATCH)
            ]
        elif self._ctx.kind == "postgresql" and _simple_batch(records):
            parts = [
                self._pg_create_op(records[i : i + _FAST_BATCH])
                for i in range(0, len(records), _FAST_BATCH)
            ]
        else:
            parts = [_listed(self._create_op(record)) for record in records]

        async def op(tx: Tx) -> list[CreateResult]:
            results: list[CreateResult] = []
            for part in parts:
                results += await part(tx)
            return results

        return op

    def _pg_create_statement(self, records: Sequence[TaskRecord]) -> tuple[Any, dict[str, Any]]:
        """PostgreSQL's one statement inserting and counting ``records``, with its
        parameters."""
        tables = self._ctx.tables
        stmt = pg_create(tables.tasks, tables.counters, len(records))
        params: dict[str, Any] = {
            "p_slot": zlib.crc32(records[0].task_id.encode()) % self._ctx.counter_slots
        }
        for i, record in enumerate(records):
            params.update({f"p{i}_{k}": v for k, v in record_values(record).items()})
        return stmt, params

    def _pg_create_op(self, records: Sequence[TaskRecord]) -> WriteOp[list[CreateResult]]:
        """:meth:`_create_fast` inside a transaction: one statement inserts and counts
        the batch, and a record whose id or key conflicted is created (or found) the
        usual way in the same transaction."""
        stmt, params = self._pg_create_statement(records)

        async def op(tx: Tx) -> list[CreateResult]:
            inserted = set((await tx.conn.execute(stmt, params)).scalars())
            results: list[CreateResult] = []
            for record in records:
                if record.task_id in inserted:
                    results.append(construct(CreateResult, record=normalized(record), created=True))
                else:
                    results.append(await self._create_op(record)(tx))
            return results

        return op

    def _create_op(self, record: TaskRecord) -> WriteOp[CreateResult]:
        values = record_values(record)

        async def op(tx: Tx) -> CreateResult:
            for _ in range(_CREATE_ATTEMPTS):
                if values["active_key"] is None and record.idempotency_key is not None:
                    # Created already failed/rejected: it takes no key, but an active
                    # holder still wins.
                    holder = await _find_holder(tx, record.idempotency_key)
                    if holder is not None:
                        return CreateResult(record=holder, created=False)
                if await insert_if_absent(tx, tx.ctx.tables.tasks, values):
                    await _insert_tags(tx, record)
                    tx.count(record.func_name, record.task_id, record.status, +1)
                    return construct(CreateResult, record=normalized(record), created=True)
                existing = await _select_task(tx, record.task_id)
                if existing is not None:
                    return CreateResult(record=existing, created=False)
                if record.idempotency_key is not None:
                    holder = await _find_holder(tx, record.idempotency_key)
                    if holder is not None:
                        return CreateResult(record=holder, created=False)
                # The conflicting task was purged or released its key meanwhile: retry.
            raise SQLBackendError(
                f"could not create task {record.task_id!r}: its id or idempotency key kept "
                "conflicting with a task that then disappeared"
            )

        return op

    async def get(self, task_id: str) -> TaskRecord | None:
        """See :meth:`fastapi_taskflow.protocols.Store.get`.

        SQLite and PostgreSQL (asyncpg) take the fast path of
        :mod:`taskflow_sql.fastget`; other drivers run two cached statements.
        """
        if not storable_text(task_id):  # no task has it; the server would refuse it
            return None
        if self._reader is not None:
            try:
                return await self._reader.get(task_id)
            except Exception as exc:
                raise wrap_error("reading a task", exc) from exc
        if self._pg_get is not None:
            return await self._get_pg(self._pg_get, task_id)
        task_stmt, logs_stmt = _get_statements(self._ctx.tables)
        params = {"p_task_id": task_id}

        async def op(conn: AsyncConnection) -> TaskRecord | None:
            row = (await conn.execute(task_stmt, params)).first()
            if row is None:
                return None
            record = fast_record(row._mapping)
            if record is None:
                return None
            logs = await conn.execute(logs_stmt, params)
            entries = [row_to_log(r._mapping) for r in logs]
            record.logs = [entry for entry in entries if entry is not None]
            return record

        return await self._exec.read("reading a task", op)

    async def _get_pg(self, fast: PostgresGet, task_id: str) -> TaskRecord | None:
        try:
            return await fast.fetch(self._ctx, task_id)
        except Exception as exc:
            raise wrap_error("reading a task", exc) from exc

    async def find_by_key(self, idempotency_key: str) -> TaskRecord | None:
        """See :meth:`fastapi_taskflow.protocols.Store.find_by_key`."""
        if not storable_text(idempotency_key):  # no task has it; hashing it would fail
            return None
        tasks = self._ctx.tables.tasks

        async def op(conn: AsyncConnection) -> TaskRecord | None:
            row = (
                await conn.execute(
                    select(*record_columns(self._ctx.tables)).where(
                        tasks.c.active_key == key_hash(idempotency_key)
                    )
                )
            ).first()
            return None if row is None else row_to_record(row._mapping)

        return await self._exec.read("finding a task by idempotency key", op)

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

        One ``UPDATE … WHERE task_id = :id AND status IN (:expected)``: the database's
        row lock makes it a compare-and-set. The old status is saved in ``prev_status``
        by the same statement, so the counters can be moved without a second read.

        ``take_key=True`` sets ``active_key`` in the same UPDATE (see
        :meth:`_transition_taking_key`): the UNIQUE index on it is what makes taking
        the key atomic against concurrent creates.
        """
        if take_key:
            check_take_key(new)
        statuses = sorted({TaskStatus(status).value for status in expected})
        if not statuses:
            return None
        changes = update.changes() if update is not None else {}
        new = TaskStatus(new)

        values = update_values(changes)
        fields = tuple(sorted(values))
        release = new in KEY_RELEASING_STATUSES
        rule = "follow" if new in ACTIVE_STATUSES else "clear"
        if take_key:
            taking = self._transition_taking_key(task_id, statuses, new, values, rule)
            return await sized(self._ctx, taking, lambda: update_texts([(task_id, update)]))

        async def op(tx: Tx) -> TaskRecord | None:
            params = _change_params(values, task_id, new, statuses, self.clock.now())
            row = await _change(
                tx, fields, params, compare_status=True, release_key=release, owner_rule=rule
            )
            if row is None:
                return None
            tx.move(row.func_name, task_id, row.prev_status, new.value)
            return row_to_record(row._mapping)

        if self._ctx.kind == "postgresql":
            # One statement, its own transaction: the update and both counters.
            tables = self._ctx.tables
            stmt = pg_transition(
                tables.tasks,
                tables.counters,
                fields,
                release_key=release,
                returning=tuple(record_columns(tables)),
                owner_rule=rule,
            )
            slot = zlib.crc32(task_id.encode()) % self._ctx.counter_slots

            async def single(conn: AsyncConnection) -> TaskRecord | None:
                params = _change_params(values, task_id, new, statuses, self.clock.now())
                params["p_slot"] = slot
                row = (await conn.execute(stmt, params)).first()
                return None if row is None else row_to_record(row._mapping)

            return await self._exec.single("changing a task's status", single)
        write = self._exec.write("changing a task's status", op, rows=1)
        return await sized(self._ctx, write, lambda: update_texts([(task_id, update)]))

    async def _transition_taking_key(
        self,
        task_id: str,
        statuses: list[str],
        new: TaskStatus,
        values: dict[str, Any],
        rule: str,
    ) -> TaskRecord | None:
        """The transition with ``active_key`` set to the hash of the task's key.

        In one transaction: read the task (locked on PostgreSQL and MySQL), compare its
        status, look for another holder of its key (refused with
        ``IdempotencyKeyHeldError`` naming it), then the UPDATE that sets
        ``active_key``. On SQLite the writer serializes transactions, so that is exact.
        On PostgreSQL and MySQL a create may insert the key between the look-up and
        the UPDATE; the UNIQUE index then refuses the UPDATE, the transaction is rolled
        back (on PostgreSQL the failed statement has aborted it), and the holder is
        read afterwards in a transaction of its own. A holder that is already gone
        again (failed, purged) means the key is free: the whole transition is tried
        again.
        """
        fields = tuple(sorted(values))

        async def op(tx: Tx) -> TaskRecord | None:
            found = await _select_for_change(tx, task_id)
            if found is None or found[0] not in statuses:
                return None
            status, key = found
            if key is None:
                raise keyless_error(task_id)
            hashed = key_hash(key)
            holder = await _holder_id(tx, hashed)
            if holder is not None and holder != task_id:
                raise IdempotencyKeyHeldError(task_id, status, holder)
            params = _change_params(values, task_id, new, statuses, self.clock.now())
            params["p_active_key"] = hashed
            try:
                row = await _change(
                    tx,
                    fields,
                    params,
                    compare_status=True,
                    release_key=False,
                    owner_rule=rule,
                    take_key=True,
                )
            except IntegrityError as exc:
                raise _KeyTakenMeanwhile(task_id, status, key) from exc
            if row is None:
                return None
            tx.move(row.func_name, task_id, row.prev_status, new.value)
            return row_to_record(row._mapping)

        what = "changing a task's status and taking its idempotency key back"
        for _ in range(_CREATE_ATTEMPTS):
            try:
                return await self._exec.write(what, op, rows=1)
            except (IdempotencyKeyHeldError, InvalidOperationError) as refused:
                raise refused from None  # raised by the op itself: no driver error behind it
            except _KeyTakenMeanwhile as race:
                holder = await self.find_by_key(race.key)  # a transaction of its own
                if holder is not None and holder.task_id != task_id:
                    raise IdempotencyKeyHeldError(task_id, race.status, holder.task_id) from None
                # The holder released the key (or was purged) meanwhile: try again.
        raise SQLBackendError(
            f"could not change task {task_id!r} and take its idempotency key back: the key "
            "kept being taken by tasks that then released it; try again"
        )

    async def update(self, task_id: str, update: TaskUpdate) -> TaskRecord | None:
        """See :meth:`fastapi_taskflow.protocols.Store.update`."""
        changes = update_values(update.changes())

        fields = tuple(sorted(changes))

        async def op(tx: Tx) -> TaskRecord | None:
            params = {f"p_{name}": value for name, value in changes.items()}
            params.update(p_task_id=task_id, p_updated_at=self.clock.now())
            row = await _change(
                tx,
                fields,
                params,
                compare_status=False,
                release_key=False,
                owner_rule="case" if "owner" in fields else "keep",
            )
            return None if row is None else row_to_record(row._mapping)

        return await self._exec.write("updating a task", op, rows=1)

    async def append_logs(self, task_id: str, entries: Sequence[LogEntry]) -> None:
        """See :meth:`fastapi_taskflow.protocols.Store.append_logs`."""
        if not entries:
            return
        rows = [log_values(task_id, entry) for entry in entries]

        async def op(tx: Tx) -> None:
            tables = tx.ctx.tables
            exists = await tx.conn.scalar(
                select(tables.tasks.c.task_id).where(tables.tasks.c.task_id == task_id)
            )
            if exists is not None:
                await tx.conn.execute(tables.logs.insert(), rows)

        write = self._exec.write("appending task logs", op, rows=len(rows))
        await sized(self._ctx, write, lambda: entry_texts(task_id, entries))


_FAST_BATCH = 64


@lru_cache(maxsize=64)
def _get_statements(tables: Tables) -> tuple[Any, Any]:
    """The task and its logs by ``:p_task_id``, built once (compiled once, then cached)."""
    task_id = bindparam("p_task_id", type_=tables.tasks.c.task_id.type)
    task = select(*record_columns(tables)).where(tables.tasks.c.task_id == task_id)
    logs = tables.logs
    entries = select(logs).where(logs.c.task_id == task_id).order_by(logs.c.id)
    return task, entries


_SQLITE_BATCH = 1000


def _listed(op: WriteOp[CreateResult]) -> WriteOp[list[CreateResult]]:
    """``op`` returning its result as a one-item list."""

    async def listed(tx: Tx) -> list[CreateResult]:
        return [await op(tx)]

    return listed


def _distinct_batch(records: Sequence[TaskRecord]) -> bool:
    """True when no record of the batch conflicts with another, and none must first
    look for a key holder (a FAILED/REJECTED record that names a key)."""
    ids: set[str] = set()
    keys: set[str] = set()
    for record in records:
        if record.task_id in ids:
            return False
        ids.add(record.task_id)
        key = record.idempotency_key
        if key is not None:
            if record.status in KEY_RELEASING_STATUSES or key in keys:
                return False
            keys.add(key)
    return True


def _rows(records: Sequence[TaskRecord]) -> int:
    """How many rows creating ``records`` writes at most (each record and its tags)."""
    return sum(1 + len(record.tags) for record in records)


def _simple_batch(records: Sequence[TaskRecord]) -> bool:
    """True when one multi-row INSERT per chunk gives each record what :meth:`create`
    would: distinct ids and keys (see :func:`_distinct_batch`) and no tags (kept in
    their own table)."""
    return not any(record.tags for record in records) and _distinct_batch(records)


class _KeyTakenMeanwhile(TaskflowError):
    """A take-key UPDATE met the UNIQUE index: a create inserted the key after the
    look-up. Raised inside the transaction (so it is rolled back) and caught by
    :meth:`SQLStore._transition_taking_key`, which then reads the holder."""

    def __init__(self, task_id: str, status: str, key: str) -> None:
        super().__init__(f"the idempotency key of task {task_id} was taken meanwhile")
        self.status = status
        self.key = key


async def _select_for_change(tx: Tx, task_id: str) -> tuple[str, str | None] | None:
    """The task's status and idempotency key (None: no such task), row-locked on
    PostgreSQL and MySQL."""
    tasks = tx.ctx.tables.tasks
    stmt = select(tasks.c.status, tasks.c.idempotency_key).where(tasks.c.task_id == task_id)
    if tx.ctx.kind != "sqlite":
        stmt = stmt.with_for_update()
    row = (await tx.conn.execute(stmt)).first()
    return None if row is None else (str(row[0]), row[1])


async def _holder_id(tx: Tx, hashed: str) -> str | None:
    """The id of the task whose ``active_key`` is ``hashed``, in the transaction (a
    locking read on MySQL, which sees the latest commit)."""
    tasks = tx.ctx.tables.tasks
    stmt = select(tasks.c.task_id).where(tasks.c.active_key == hashed)
    if tx.ctx.kind == "mysql":
        stmt = stmt.with_for_update(read=True)
    found: str | None = await tx.conn.scalar(stmt)
    return found


async def _change(
    tx: Tx,
    fields: tuple[str, ...],
    params: dict[str, Any],
    *,
    compare_status: bool,
    release_key: bool,
    owner_rule: str,
    take_key: bool = False,
) -> Row[Any] | None:
    """Run one task UPDATE and return the row after it (None: nothing matched)."""
    tables = tx.ctx.tables
    columns = tuple(record_columns(tables))
    returning = columns if tx.ctx.update_returning else None
    stmt = task_change(
        tables.tasks,
        fields,
        compare_status=compare_status,
        release_key=release_key,
        returning=returning,
        owner_rule=owner_rule,
        take_key=take_key,
    )
    result = await tx.conn.execute(stmt, params)
    if returning is not None:
        return result.first()
    if not result.rowcount:
        return None
    # MariaDB has no UPDATE … RETURNING; this transaction holds the row lock now.
    task_id = params["p_task_id"]
    return (
        await tx.conn.execute(select(*columns).where(tables.tasks.c.task_id == task_id))
    ).first()


async def _select_task(tx: Tx, task_id: str) -> TaskRecord | None:
    tables = tx.ctx.tables
    stmt = select(*record_columns(tables)).where(tables.tasks.c.task_id == task_id)
    if tx.ctx.kind == "mysql":
        stmt = stmt.with_for_update(read=True)  # a locking read sees the latest commit
    row = (await tx.conn.execute(stmt)).first()
    return None if row is None else row_to_record(row._mapping)


async def _find_holder(tx: Tx, idempotency_key: str) -> TaskRecord | None:
    tables = tx.ctx.tables
    stmt = select(*record_columns(tables)).where(
        tables.tasks.c.active_key == key_hash(idempotency_key)
    )
    if tx.ctx.kind == "mysql":
        stmt = stmt.with_for_update(read=True)
    row = (await tx.conn.execute(stmt)).first()
    return None if row is None else row_to_record(row._mapping)


async def _insert_tags(tx: Tx, record: TaskRecord) -> None:
    if not record.tags:
        return
    rows = [
        {"task_id": record.task_id, "key": tag_token(key), "value": tag_token(value)}
        for key, value in record.tags.items()
    ]
    await tx.conn.execute(tx.ctx.tables.tags.insert(), rows)


def _change_params(
    values: dict[str, Any], task_id: str, new: TaskStatus, statuses: list[str], now: Any
) -> dict[str, Any]:
    """The parameters of :func:`~taskflow_sql.statements.task_change` for one task:
    its changed ``values`` and the compare-and-set's id, new and expected statuses."""
    params = {f"p_{name}": value for name, value in values.items()}
    params.update(p_task_id=task_id, p_status=new.value, p_expected=statuses, p_updated_at=now)
    return params
