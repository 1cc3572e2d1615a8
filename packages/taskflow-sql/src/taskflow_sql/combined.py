"""``write_many``: a group commit's new records and status changes in one transaction.

The engine's group commit hands the store, in one call, the records requests just
accepted and the starts and finishes of running tasks. Written as ``create_many`` then
``transition_many`` that is two transactions, two commits (two fsyncs on SQLite, two
WAL flushes on PostgreSQL, two redo-log flushes on MySQL) and two turns of the write
slot; here it is one:

* SQLite: one operation of the group-commit writer (:mod:`taskflow_sql.sqlite_writer`),
  so the creates' probe and insert (:mod:`taskflow_sql.sqlite_create`) and the grouped
  transitions (:mod:`taskflow_sql.grouped`) share one ``BEGIN IMMEDIATE … COMMIT`` on
  the writer's kept connection (with whatever other writes that batch holds).
* PostgreSQL with asyncpg: one statement, one round trip (see
  :meth:`taskflow_sql.pg_writes.PostgresWrites.write_many`), a change to a task
  created by the same call included; a call it cannot take exactly (tags, duplicate
  ids or keys, a change releasing the key of a record created by the same call) goes
  the generic way.
* MySQL/MariaDB and the generic path: one transaction (retried whole on deadlock)
  running the statements of ``create_many`` and then those of ``transition_many``;
  the creates are written first, so a change may name a task created by the same call.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from fastapi_taskflow.models import (
    KEY_RELEASING_STATUSES,
    CreateResult,
    TaskRecord,
    TaskStatus,
    Transition,
)

from .context import Tx
from .grouped import Moved, pg_transitions, run_transitions
from .oversized import record_texts, sized, transition_texts
from .ownership import SQLOwnership
from .pg_writes import CREATE_CHUNK
from .store import SQLStore, _rows, _simple_batch

__all__ = ["SQLCombinedWrite"]


class SQLCombinedWrite(SQLStore, SQLOwnership):
    """``write_many`` over ``create_many`` and ``transition_many``; mixed into
    :class:`taskflow_sql.SQLBackend`."""

    async def write_many(
        self, creates: Sequence[TaskRecord], transitions: Sequence[Transition]
    ) -> tuple[list[CreateResult], list[Moved]]:
        """See :meth:`fastapi_taskflow.protocols.Store.write_many`: one transaction and
        one commit on every SQL database (on PostgreSQL with asyncpg, one statement).

        A side that is empty is written the way its own call would write it.
        """
        if not transitions:
            return await self.create_many(creates), []
        if not creates:
            return [], await self.transition_many(transitions)
        items = list(transitions)
        if self._pg_write is not None and _one_statement(creates, items):
            now = self.clock.now()
            made, moved = await self._pg_write.write_many(creates, items, now)
            results: list[CreateResult] = []
            late: set[str] = set()
            for record, result in zip(creates, made, strict=True):
                if result is None:  # taken meanwhile by a task committed since
                    result = await self._exec.write("creating a task", self._create_op(record))
                    late.add(record.task_id)
                results.append(result)
            # A change to such a record was not applied (the statement saw no row): as
            # the creates come first, apply it now.
            again = [index for index, item in enumerate(items) if item.task_id in late]
            if again:
                redone = await self.transition_many([items[index] for index in again])
                for index, changed in zip(again, redone, strict=True):
                    moved[index] = changed
            return results, moved
        create = self._creates_op(creates)
        postgres = self._ctx.kind == "postgresql"

        async def op(tx: Tx) -> tuple[list[CreateResult], list[Moved]]:
            made = await create(tx)
            now = self.clock.now()
            if postgres:  # one statement for the changes and their counters
                ctx = tx.ctx
                moved = await pg_transitions(tx.conn, ctx.tables, ctx.counter_slots, items, now)
            else:
                moved = await run_transitions(tx, items, now)
            return made, moved

        write = self._exec.write("writing tasks", op, rows=_rows(creates) + len(items))
        return await sized(
            self._ctx,
            write,
            lambda: itertools.chain(record_texts(creates), transition_texts(items)),
        )


def _one_statement(creates: Sequence[TaskRecord], transitions: Sequence[Transition]) -> bool:
    """True when PostgreSQL's one-statement write gives what the two calls would: the
    creates make one array-bound insert (distinct, tag-less: see ``create_many``), and
    no change to a task created by the same call releases that record's idempotency
    key (the insert must still check it; see ``PostgresWrites.write_many``)."""
    if len(creates) > CREATE_CHUNK or not _simple_batch(creates):
        return False
    keyed = {record.task_id for record in creates if record.idempotency_key is not None}
    return not any(
        item.task_id in keyed and TaskStatus(item.new) in KEY_RELEASING_STATUSES
        for item in transitions
    )
