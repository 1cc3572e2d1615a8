"""The admin side of the Store: the task list, stats and retention."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import (
    Integer,
    and_,
    bindparam,
    cast,
    delete,
    exists,
    extract,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement

from fastapi_taskflow.isotime import parse_iso
from fastapi_taskflow.limits import storable_names, unmatchable
from fastapi_taskflow.models import (
    DURATION_STATUSES,
    DURATION_WINDOW,
    EPOCH,
    PERCENTILES,
    TERMINAL_STATUSES,
    DurationStats,
    TaskPage,
    TaskQuery,
    TaskStats,
    TaskStatus,
    ThroughputBucket,
    decode_cursor,
    encode_cursor,
    fold_text,
    nearest_rank,
)

from .context import SQLContext, Tx
from .dialect import locked
from .executor import Executor
from .rows import record_columns, row_to_record, tag_token

__all__ = ["SQLQueries", "chunks"]

_TERMINAL = sorted(status.value for status in TERMINAL_STATUSES)
_FINISHED = sorted(status.value for status in DURATION_STATUSES)
_CHUNK = 500


def chunks(items: Sequence[Any], size: int = _CHUNK) -> list[Sequence[Any]]:
    """Split ``items`` for ``IN (…)`` lists that stay under every engine's limit."""
    return [items[i : i + size] for i in range(0, len(items), size)]


class SQLQueries:
    """Task list, stats and purge; mixed into :class:`taskflow_sql.SQLBackend`."""

    _ctx: SQLContext
    _exec: Executor

    async def query(self, query: TaskQuery) -> TaskPage:
        """See :meth:`fastapi_taskflow.protocols.Store.query`.

        Newest first by ``(created_at, task_id)``; each filter has an index whose
        trailing columns are ``(created_at, task_id)``, so a page costs an index range
        scan of ``limit`` rows. Tags are matched through ``task_tags``.
        """
        after = decode_cursor(query.cursor) if query.cursor else None
        if unmatchable(query):  # the server would refuse the value itself
            return TaskPage(items=[])
        tables = self._ctx.tables
        tasks = tables.tasks
        where: list[Any] = []
        if query.statuses:
            where.append(tasks.c.status.in_(sorted({TaskStatus(s).value for s in query.statuses})))
        if query.func_name is not None:
            where.append(tasks.c.func_name == query.func_name)
        if query.queue is not None:
            where.append(tasks.c.queue == query.queue)
        if query.created_after is not None:
            where.append(tasks.c.created_at >= query.created_after)
        if query.created_before is not None:
            where.append(tasks.c.created_at < query.created_before)
        for key, value in (query.tags or {}).items():
            tags = tables.tags
            where.append(
                exists().where(
                    tags.c.task_id == tasks.c.task_id,
                    tags.c.key == tag_token(key),
                    tags.c.value == tag_token(value),
                )
            )
        if query.q:
            where.append(_text_match(self._ctx.kind, tables, query.q))
        if after is not None:
            created, task_id = after
            where.append(tasks.c.created_at <= created)
            where.append(
                or_(
                    tasks.c.created_at < created,
                    and_(tasks.c.created_at == created, tasks.c.task_id < task_id),
                )
            )
        stmt = (
            select(*record_columns(tables))
            .where(*where)
            .order_by(tasks.c.created_at.desc(), tasks.c.task_id.desc())
            .limit(query.limit + 1)
        )

        async def op(conn: AsyncConnection) -> TaskPage:
            rows = (await conn.execute(stmt)).all()
            more = len(rows) > query.limit
            items = [row_to_record(row._mapping) for row in rows[: query.limit]]
            next_cursor = None
            if more:
                last = rows[query.limit - 1]
                next_cursor = encode_cursor(last.created_at, last.task_id)
            found = [item for item in items if item is not None]
            return TaskPage(items=found, next_cursor=next_cursor)

        return await self._exec.read("listing tasks", op)

    async def stats(self) -> TaskStats:
        """See :meth:`fastapi_taskflow.protocols.Store.stats`.

        Reads the ``counters`` table (a few rows per function), which every create,
        transition and purge keeps exact in its own transaction.
        """
        counters = self._ctx.tables.counters
        stmt = select(counters.c.func_name, counters.c.status, func.sum(counters.c.n)).group_by(
            counters.c.func_name, counters.c.status
        )

        async def op(conn: AsyncConnection) -> TaskStats:
            by_status: dict[TaskStatus, int] = {}
            by_func: dict[str, dict[TaskStatus, int]] = {}
            for func_name, status, total in await conn.execute(stmt):
                count = int(total or 0)
                if not count:
                    continue
                status = TaskStatus(status)
                by_status[status] = by_status.get(status, 0) + count
                by_func.setdefault(func_name, {})[status] = count
            return TaskStats(total=sum(by_status.values()), by_status=by_status, by_func=by_func)

        return await self._exec.read("computing task stats", op)

    async def durations(
        self, *, func_names: Collection[str] | None = None
    ) -> dict[str, DurationStats]:
        """See :meth:`fastapi_taskflow.protocols.Store.durations`.

        One query per function that has finished tasks (the ``counters`` table names
        them), over its ``DURATION_WINDOW`` (1,000) most recently created finished
        tasks: a walk of its ``(func_name, created_at)`` index that stops there, so the
        cost does not grow with the history kept. PostgreSQL ranks them with
        ``percentile_disc``; SQLite and MySQL/MariaDB (no percentile functions) number
        them by duration with ``ROW_NUMBER()`` and keep the rows whose number is a
        nearest rank (the ordered-offset rule).
        """
        tables = self._ctx.tables
        kind = self._ctx.kind
        counters = tables.counters
        named = (
            select(counters.c.func_name)
            .where(counters.c.status.in_(_FINISHED))
            .group_by(counters.c.func_name)
            .having(func.sum(counters.c.n) > 0)
        )
        if func_names is not None:
            wanted = sorted(set(storable_names(func_names)))
            named = named.where(counters.c.func_name.in_(wanted or [""]))
        stmt = _durations_query(tables, kind)

        async def op(conn: AsyncConnection) -> dict[str, DurationStats]:
            names = sorted(str(name) for name in (await conn.execute(named)).scalars())
            found = {}
            for name in names:
                rows = (await conn.execute(stmt, {"func_name": name})).all()
                stats = _duration_stats(kind, rows)
                if stats is not None:
                    found[name] = stats
            return found

        return await self._exec.read("computing task durations", op)

    async def throughput(
        self, *, since: datetime, until: datetime, bucket_seconds: int
    ) -> list[ThroughputBucket]:
        """See :meth:`fastapi_taskflow.protocols.Store.throughput`.

        One ``GROUP BY`` over the ``finished_at`` index range: the bucket is the whole
        seconds since the epoch divided by ``bucket_seconds``.
        """
        tasks = self._ctx.tables.tasks
        width = int(bucket_seconds)
        bucket = _epoch_seconds(self._ctx.kind, tasks.c.finished_at, width).label("bucket")
        stmt = (
            select(bucket, tasks.c.status, func.count())
            .where(
                tasks.c.finished_at >= since,
                tasks.c.finished_at < until,
                _status_in(self._ctx.kind, tasks, _FINISHED),
            )
            .group_by(bucket, tasks.c.status)
        )

        async def op(conn: AsyncConnection) -> list[ThroughputBucket]:
            counts: dict[int, dict[str, int]] = {}
            for index, status_value, count in await conn.execute(stmt):
                per = counts.setdefault(int(index), {"succeeded": 0, "failed": 0})
                key = "succeeded" if status_value == TaskStatus.SUCCESS.value else "failed"
                per[key] += int(count)
            return [
                ThroughputBucket(
                    bucket_start=EPOCH + timedelta(seconds=index * width), **counts[index]
                )
                for index in sorted(counts)
            ]

        return await self._exec.read("computing task throughput", op)

    async def purge(self, *, finished_before: datetime, batch_size: int = 1000) -> int:
        """See :meth:`fastapi_taskflow.protocols.Store.purge`.

        One short transaction per call: picks up to ``batch_size`` finished tasks, the
        oldest first, by a walk of the ``finished_at`` index that stops there (``SKIP
        LOCKED`` where available, so concurrent purgers split the work), deletes them
        with their tags and logs, and adjusts the counters.
        """
        if batch_size < 1:
            return 0

        async def op(tx: Tx) -> int:
            tables = tx.ctx.tables
            tasks = tables.tasks
            pick = (
                select(tasks.c.task_id, tasks.c.func_name, tasks.c.status)
                .where(
                    tasks.c.finished_at < finished_before,
                    _status_in(tx.ctx.kind, tasks, _TERMINAL),
                )
                .order_by(tasks.c.finished_at)
                .limit(batch_size)
            )
            rows = (await tx.conn.execute(locked(pick, tx, skip_locked=True))).all()
            if not rows:
                return 0
            ids = [row.task_id for row in rows]
            for part in chunks(ids):
                await tx.conn.execute(delete(tables.logs).where(tables.logs.c.task_id.in_(part)))
                await tx.conn.execute(delete(tables.tags).where(tables.tags.c.task_id.in_(part)))
                await tx.conn.execute(delete(tasks).where(tasks.c.task_id.in_(part)))
            for row in rows:
                tx.count(row.func_name, row.task_id, row.status, -1)
            return len(rows)

        return await self._exec.write("purging finished tasks", op)


def _text_match(kind: str, tables: Any, q: str) -> ColumnElement[bool]:
    """``q`` in func_name, task_id, error or a tag key/value, folding ASCII letters only
    (``fold_text``, as every backend does); LIKE characters escaped."""
    needle = fold_text(q)
    folds = sorted({c.upper() for c in needle if "a" <= c <= "z"})

    def has(column: Any) -> ColumnElement[bool]:
        return _ascii_folded(kind, column, folds).contains(needle, autoescape=True)

    tasks, tags = tables.tasks, tables.tags
    return or_(
        has(tasks.c.func_name),
        has(tasks.c.task_id),
        has(tasks.c.error),
        exists().where(tags.c.task_id == tasks.c.task_id, or_(has(tags.c.key), has(tags.c.value))),
    )


def _ascii_folded(
    kind: str, column: ColumnElement[Any], letters: Sequence[str]
) -> ColumnElement[Any]:
    """``column`` with the upper-case ASCII ``letters`` lowered, and no other letter.

    SQLite's ``lower()`` folds ASCII only. PostgreSQL's and MySQL's fold every letter
    their locale or character set knows (``É`` to ``é``), so there the letters are
    replaced one by one -- only those of the search text: an upper-case letter whose
    lower case is not in the text cannot be part of a match, folded or not.
    """
    if kind == "postgresql":
        upper = "".join(letters)
        return func.translate(column, upper, upper.lower()) if upper else column
    if kind == "mysql":  # a binary collation: LIKE compares exactly
        folded: ColumnElement[Any] = column
        for letter in letters:
            folded = func.replace(folded, letter, letter.lower())
        return folded
    return func.lower(column)


def _duration_expr(kind: str, tasks: Any) -> ColumnElement[Any]:
    """``finished_at - started_at`` as a number that orders like the duration."""
    if kind == "postgresql":
        return extract("epoch", tasks.c.finished_at - tasks.c.started_at)
    if kind == "mysql":
        return func.timestampdiff(
            literal_column("MICROSECOND"), tasks.c.started_at, tasks.c.finished_at
        )
    return func.julianday(tasks.c.finished_at) - func.julianday(tasks.c.started_at)


def _epoch_seconds(kind: str, column: Any, width: int) -> ColumnElement[Any]:
    """The bucket index: whole seconds since the epoch (UTC) divided by ``width``."""
    if kind == "postgresql":
        return func.floor(extract("epoch", column) / width)
    if kind == "mysql":
        seconds = func.timestampdiff(
            literal_column("SECOND"), literal_column("'1970-01-01 00:00:00'"), column
        )
        return func.floor(seconds / width)
    # ``//``: SQLAlchemy renders ``/`` of two integers as true division (``/ (? + 0.0)``),
    # which would make a bucket of every distinct second.
    return cast(func.strftime("%s", column), Integer) // width


def _status_in(kind: str, tasks: Any, statuses: Sequence[str]) -> ColumnElement[bool]:
    """``status`` is one of ``statuses``, written so that the planner walks the narrow
    range the query is about (one function's newest rows, a finish-time range) rather
    than the status index, which holds every finished task however old: on SQLite and
    MySQL/MariaDB the status is wrapped in an expression no index serves (their
    planners otherwise take the status index and read every finished task);
    PostgreSQL's planner weighs the column's statistics (and misjudges the expression),
    so there it stays the column."""
    status = tasks.c.status if kind == "postgresql" else func.coalesce(tasks.c.status, "")
    return status.in_(statuses)


def _durations_query(tables: Any, kind: str) -> Select[Any]:
    """The percentiles of one function's (bound parameter ``func_name``) most recently
    created ``DURATION_WINDOW`` finished tasks: on PostgreSQL one row (count, p50, p95,
    p99), elsewhere the rows at the nearest ranks (``n``, ``rn``, ``started_at``,
    ``finished_at``)."""
    tasks = tables.tasks
    recent = (
        select(
            tasks.c.task_id,
            tasks.c.started_at,
            tasks.c.finished_at,
            _duration_expr(kind, tasks).label("duration"),
        )
        .where(
            tasks.c.func_name == bindparam("func_name"),
            _status_in(kind, tasks, _FINISHED),
            tasks.c.started_at.is_not(None),
            tasks.c.finished_at.is_not(None),
        )
        .order_by(tasks.c.created_at.desc(), tasks.c.task_id.desc())
        .limit(DURATION_WINDOW)
        .subquery("recent")
    )
    if kind == "postgresql":
        return select(
            func.count(),
            *(
                func.percentile_disc(fraction).within_group(recent.c.duration)
                for fraction in PERCENTILES
            ),
        )
    ranked = select(
        recent.c.started_at,
        recent.c.finished_at,
        func.count().over().label("n"),
        func.row_number().over(order_by=(recent.c.duration, recent.c.task_id)).label("rn"),
    ).subquery("ranked")
    # rn is the nearest rank ceil(p * n) of some percentile: rn*S >= P*n > (rn-1)*S.
    picks = [
        and_(
            ranked.c.rn * 10_000 >= round(fraction * 10_000) * ranked.c.n,
            (ranked.c.rn - 1) * 10_000 < round(fraction * 10_000) * ranked.c.n,
        )
        for fraction in PERCENTILES
    ]
    return select(ranked.c.n, ranked.c.rn, ranked.c.started_at, ranked.c.finished_at).where(
        or_(*picks)
    )


def _duration_stats(kind: str, rows: Sequence[Any]) -> DurationStats | None:
    """What :func:`_durations_query` answered for one function, as its stats (None: it
    has no finished task with both times)."""
    if kind == "postgresql":
        count, p50, p95, p99 = rows[0]
        if not count:
            return None
        return DurationStats(count=int(count), p50=float(p50), p95=float(p95), p99=float(p99))
    if not rows:
        return None
    by_rank = {
        int(rank) - 1: (_aware(finished) - _aware(started)).total_seconds()
        for _, rank, started, finished in rows
    }
    n = int(rows[0][0])
    p50, p95, p99 = (by_rank[nearest_rank(n, fraction)] for fraction in PERCENTILES)
    return DurationStats(count=n, p50=p50, p95=p95, p99=p99)


def _aware(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else parse_iso(str(value))
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment
