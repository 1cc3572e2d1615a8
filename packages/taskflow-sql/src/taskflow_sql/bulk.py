"""Loading many task records at once (benchmarks, imports from another store).

Not for the engine's hot path: it bypasses idempotency checks (a duplicate id or held
key fails the batch) but keeps tags and the stats counters exact.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from fastapi_taskflow.models import TaskRecord

from .context import Tx
from .dialect import add_counts
from .executor import run_transaction
from .rows import record_values, tag_token

if TYPE_CHECKING:
    from .backend import SQLBackend

__all__ = ["bulk_insert_tasks"]


def _batches(records: Iterable[TaskRecord], size: int) -> Iterator[list[TaskRecord]]:
    it = iter(records)
    while batch := list(islice(it, size)):
        yield batch


async def bulk_insert_tasks(
    backend: SQLBackend, records: Iterable[TaskRecord], *, batch_size: int = 20_000
) -> int:
    """Insert ``records`` in batches of ``batch_size``, one transaction per batch.

    Uses ``COPY`` on PostgreSQL (asyncpg) and multi-row ``executemany`` elsewhere.
    Returns how many records were inserted.

    Raises:
        SQLBackendError: a record's id or idempotency key already exists.
    """
    ctx = backend._ctx
    total = 0
    for batch in _batches(records, batch_size):
        rows = [record_values(record) for record in batch]
        tags = [
            {"task_id": r.task_id, "key": tag_token(k), "value": tag_token(v)}
            for r in batch
            for k, v in r.tags.items()
        ]
        counts = Counter((r.func_name, r.status, r.task_id) for r in batch)

        async def op(
            tx: Tx,
            rows: list[dict[str, Any]] = rows,
            tags: list[dict[str, Any]] = tags,
            counts: Counter[Any] = counts,
        ) -> None:
            tables = tx.ctx.tables
            if tx.ctx.kind == "postgresql" and await _copy(tx, rows, tags):
                pass
            else:
                await tx.conn.execute(tables.tasks.insert(), rows)
                if tags:
                    await tx.conn.execute(tables.tags.insert(), tags)
            for (func_name, status, task_id), n in counts.items():
                tx.count(func_name, task_id, status, n)
            await add_counts(tx)

        await run_transaction(ctx, [op])
        total += len(batch)
    return total


async def _copy(tx: Tx, rows: list[dict[str, Any]], tags: list[dict[str, Any]]) -> bool:
    """COPY rows in with asyncpg; False when the driver is not asyncpg."""
    raw = await tx.conn.get_raw_connection()
    driver: Any = raw.driver_connection
    if not hasattr(driver, "copy_records_to_table"):
        return False
    await tx.conn.execute(select(1))  # start the transaction so COPY is part of it
    tables = tx.ctx.tables
    for table, data in ((tables.tasks, rows), (tables.tags, tags)):
        if not data:
            continue
        columns = list(data[0])
        await driver.copy_records_to_table(
            table.name,
            records=[tuple(row[c] for c in columns) for row in data],
            columns=columns,
            schema_name=tables.schema or "public",
        )
    return True
