"""What the admin API reads from a store: text search, durations and throughput."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.models import (
    TaskQuery,
    TaskRecord,
    TaskStatus,
    TaskUpdate,
    ThroughputBucket,
    nearest_rank,
)
from fastapi_taskflow.protocols import TaskBackend

from ._base import ConformanceBase, create_task, seconds

__all__ = ["DurationTests", "TextSearchTests", "ThroughputTests"]

PENDING, RUNNING, SUCCESS, FAILED, CANCELLED = (
    TaskStatus.PENDING,
    TaskStatus.RUNNING,
    TaskStatus.SUCCESS,
    TaskStatus.FAILED,
    TaskStatus.CANCELLED,
)


async def finished(
    backend: TaskBackend,
    clock: ManualClock,
    *,
    func_name: str,
    took: float,
    status: TaskStatus = SUCCESS,
    ended: datetime | None = None,
) -> TaskRecord:
    """Create a task that ran for ``took`` seconds and ended at ``ended`` (default: now)."""
    end = ended or clock.now()
    return await create_task(
        backend,
        clock,
        func_name=func_name,
        status=status,
        started_at=end - seconds(took),
        finished_at=end,
    )


class TextSearchTests(ConformanceBase):
    """``query(TaskQuery(q=...))``: text search over name, id, error and tags."""

    async def _seed(self, backend: TaskBackend, clock: ManualClock) -> list[TaskRecord]:
        return [
            await create_task(backend, clock, func_name="billing.SendInvoice"),
            await create_task(backend, clock, func_name="mail.send", tags={"Tenant": "acme"}),
            await create_task(backend, clock, func_name="mail.send", tags={"region": "EU-west"}),
            await create_task(
                backend, clock, func_name="reports.build", status=FAILED, error="Timeout: 50%_x"
            ),
            await create_task(backend, clock, func_name="reports.build"),
        ]

    @pytest.mark.parametrize(
        "q, expected",
        [
            ("invoice", [0]),
            ("MAIL.SEND", [1, 2]),
            ("tenant", [1]),
            ("ACME", [1]),
            ("eu-", [2]),
            ("timeout", [3]),
            ("50%_", [3]),
            ("%", [3]),
            ("_x", [3]),
            ("nothing-like-this", []),
            ("", [0, 1, 2, 3, 4]),
        ],
        ids=[
            "func-part",
            "func-case",
            "tag-key",
            "tag-value",
            "tag-value-part",
            "error",
            "wildcards-literal",
            "percent",
            "underscore",
            "no-match",
            "empty",
        ],
    )
    async def test_text_search(
        self, backend: TaskBackend, clock: ManualClock, q: str, expected: list[int]
    ) -> None:
        """``q`` is a case-insensitive (ASCII) substring of name, error or a tag.

        ``%`` and ``_`` are plain characters, never wildcards. If this fails, check the
        search predicate (``LOWER(col) LIKE '%' || LOWER(:q) || '%' ESCAPE ...`` with
        the pattern characters escaped) covers func_name, task_id, error and tags.
        """
        records = await self._seed(backend, clock)
        page = await backend.query(TaskQuery(q=q))
        want = sorted(records[i].task_id for i in expected)
        assert sorted(r.task_id for r in page.items) == want

    async def test_text_search_folds_ascii_letters_only(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Only ``A``-``Z`` match in either case; every other letter matches as written.

        The same search finds the same tasks on every backend. If this fails, fold
        ``[A-Z]`` yourself instead of calling the database's ``lower()`` (PostgreSQL's
        and MySQL's fold ``É`` to ``é`` too, by locale or character set).
        """
        dessert = await create_task(
            backend, clock, func_name="menu.Crème_Brûlée", tags={"chef": "ÉLODIE"}
        )
        found = {
            q: [r.task_id for r in (await backend.query(TaskQuery(q=q))).items]
            for q in ("crème_brûlée", "CRèME", "CRÈME", "brÛlée", "Élodie", "élodie")
        }
        assert found == {
            "crème_brûlée": [dessert.task_id],
            "CRèME": [dessert.task_id],  # C, R, M, E fold; è is as stored
            "CRÈME": [],  # È is not è
            "brÛlée": [],
            "Élodie": [dessert.task_id],  # LODIE folds; É is as stored
            "élodie": [],
        }

    async def test_text_search_by_task_id_and_with_filters(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """``q`` matches part of a task id and combines with the other filters (AND).

        If this fails, check that the text predicate is ANDed with the filters and the
        keyset predicate, and that pages of a search follow ``next_cursor``.
        """
        records = await self._seed(backend, clock)
        target = records[4]
        page = await backend.query(TaskQuery(q=target.task_id[3:15].upper()))
        assert [r.task_id for r in page.items] == [target.task_id]
        failed = await backend.query(TaskQuery(q="reports", statuses=[FAILED]))
        assert [r.task_id for r in failed.items] == [records[3].task_id]
        for i in range(5):
            await create_task(backend, clock, func_name=f"search.page{i}", created_at=clock.now())
            clock.advance(1)
        first = await backend.query(TaskQuery(q="search.PAGE", limit=3))
        assert len(first.items) == 3 and first.next_cursor is not None
        rest = await backend.query(TaskQuery(q="search.page", limit=3, cursor=first.next_cursor))
        names = [r.func_name for r in first.items + rest.items]
        assert names == [f"search.page{i}" for i in reversed(range(5))]
        assert rest.next_cursor is None


class DurationTests(ConformanceBase):
    """``durations``: nearest-rank run-time percentiles per function."""

    async def test_durations_empty(self, backend: TaskBackend, clock: ManualClock) -> None:
        """No finished task: no entry; unfinished, cancelled or never-started tasks: none.

        If this fails, check that durations() counts only SUCCESS/FAILED tasks with both
        ``started_at`` and ``finished_at``.
        """
        assert await backend.durations() == {}
        await create_task(backend, clock, func_name="app.a")
        await create_task(backend, clock, func_name="app.a", status=RUNNING, started_at=clock.now())
        await create_task(
            backend,
            clock,
            func_name="app.a",
            status=CANCELLED,
            started_at=clock.now() - seconds(3),
            finished_at=clock.now(),
        )
        await create_task(backend, clock, func_name="app.a", status=FAILED, finished_at=clock.now())
        assert await backend.durations() == {}

    async def test_durations_percentiles(self, backend: TaskBackend, clock: ManualClock) -> None:
        """p50/p95/p99 are the nearest-rank values of ``finished_at - started_at``.

        If this fails, check the rank: the value at 1-based position
        ``ceil(p * count)`` of the ascending durations (``models.nearest_rank``), which
        is ``percentile_disc`` in SQL.
        """
        a = [0.25 * (i + 1) for i in range(40)]  # 0.25 .. 10.0
        for i, took in enumerate(reversed(a)):
            status = FAILED if i % 5 == 0 else SUCCESS
            await finished(backend, clock, func_name="app.a", took=took, status=status)
            clock.advance(1)
        await finished(backend, clock, func_name="app.b", took=1.5)
        result = await backend.durations()
        assert set(result) == {"app.a", "app.b"}
        stats = result["app.a"]
        assert stats.count == 40
        for got, fraction in zip((stats.p50, stats.p95, stats.p99), (0.5, 0.95, 0.99), strict=True):
            assert got == pytest.approx(a[nearest_rank(40, fraction)], abs=1e-3)
        b = result["app.b"]
        assert b.count == 1 and b.p50 == b.p95 == b.p99 == pytest.approx(1.5)
        only_b = await backend.durations(func_names=["app.b", "app.missing"])
        assert set(only_b) == {"app.b"}

    async def test_durations_follow_transitions(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """A task counts once it finishes, and stops counting when it is retried.

        If this fails, check that whatever structure feeds durations() is updated by
        transition() (finish sets it, leaving SUCCESS/FAILED removes it) and by purge().
        """
        task = await create_task(backend, clock, func_name="app.t")
        start = clock.now()
        await backend.transition(
            task.task_id, expected=[PENDING], new=RUNNING, update=TaskUpdate(started_at=start)
        )
        assert await backend.durations() == {}
        clock.advance(2.5)
        await backend.transition(
            task.task_id,
            expected=[RUNNING],
            new=FAILED,
            update=TaskUpdate(finished_at=clock.now()),
        )
        got = await backend.durations()
        assert got["app.t"].count == 1 and got["app.t"].p50 == pytest.approx(2.5)
        await backend.transition(task.task_id, expected=[FAILED], new=PENDING)
        assert await backend.durations() == {}
        await backend.transition(
            task.task_id, expected=[PENDING], new=SUCCESS, update=TaskUpdate(finished_at=start)
        )
        assert (await backend.durations())["app.t"].p50 == pytest.approx(0.0)
        clock.advance(10)
        assert await backend.purge(finished_before=clock.now()) == 1
        assert await backend.durations() == {}


class ThroughputTests(ConformanceBase):
    """``throughput``: finished tasks per time bucket."""

    async def test_throughput_buckets(self, backend: TaskBackend, clock: ManualClock) -> None:
        """Buckets are aligned on the epoch, hold SUCCESS and FAILED counts, skip empties.

        If this fails, check the bucket expression (``finished_at`` floored to a
        multiple of ``bucket_seconds`` since 1970-01-01 UTC), the half-open range
        ``since <= finished_at < until``, and that only SUCCESS/FAILED count.
        """
        base = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
        for offset, status in [
            (5, SUCCESS),
            (59.5, SUCCESS),
            (60, FAILED),
            (61, SUCCESS),
            (125, SUCCESS),
            (126, CANCELLED),
            (300, SUCCESS),  # == until: excluded
            (-1, SUCCESS),  # before since: excluded
        ]:
            await finished(
                backend,
                clock,
                func_name="app.x",
                took=1,
                status=status,
                ended=base + seconds(offset),
            )
        await create_task(backend, clock, func_name="app.x", status=RUNNING)
        got = await backend.throughput(since=base, until=base + seconds(300), bucket_seconds=60)
        assert got == [
            ThroughputBucket(bucket_start=base, succeeded=2, failed=0),
            ThroughputBucket(bucket_start=base + seconds(60), succeeded=1, failed=1),
            ThroughputBucket(bucket_start=base + seconds(120), succeeded=1, failed=0),
        ]
        wide = await backend.throughput(
            since=base - seconds(3600), until=base + seconds(3600), bucket_seconds=3600
        )
        assert wide == [
            ThroughputBucket(bucket_start=base - seconds(3600), succeeded=1, failed=0),
            ThroughputBucket(bucket_start=base, succeeded=5, failed=1),
        ]

    async def test_throughput_empty(self, backend: TaskBackend, clock: ManualClock) -> None:
        """Nothing finished in the range: an empty list.

        If this fails, check that throughput() returns no zero buckets.
        """
        await create_task(backend, clock)
        now = clock.now()
        assert await backend.throughput(since=now - seconds(60), until=now, bucket_seconds=10) == []
