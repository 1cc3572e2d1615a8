"""Listing tasks: filters, newest-first order and keyset pagination."""

from __future__ import annotations

import base64
from collections.abc import Iterable

import pytest

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.errors import InvalidOperationError
from fastapi_taskflow.models import LogEntry, TaskQuery, TaskRecord, TaskStatus, encode_cursor
from fastapi_taskflow.protocols import TaskBackend

from ._base import ConformanceBase, create_task, seconds

__all__ = ["QueryTests"]

PENDING, RUNNING, SUCCESS, FAILED = (
    TaskStatus.PENDING,
    TaskStatus.RUNNING,
    TaskStatus.SUCCESS,
    TaskStatus.FAILED,
)


def newest_first(records: Iterable[TaskRecord]) -> list[str]:
    """Task ids in the order ``query`` must return them."""
    ordered = sorted(records, key=lambda r: (r.created_at, r.task_id), reverse=True)
    return [r.task_id for r in ordered]


async def walk(backend: TaskBackend, query: TaskQuery) -> list[list[TaskRecord]]:
    """Follow ``next_cursor`` from the first page to the last; return every page."""
    pages: list[list[TaskRecord]] = []
    cursor: str | None = None
    while True:
        page = await backend.query(query.model_copy(update={"cursor": cursor}))
        pages.append(page.items)
        if page.next_cursor is None:
            return pages
        assert len(pages) < 500, "pagination does not end; check next_cursor on the last page"
        cursor = page.next_cursor


async def seed(backend: TaskBackend, clock: ManualClock) -> list[TaskRecord]:
    """Eight tasks, ten seconds apart, with a spread of funcs, queues, statuses and tags."""
    base = clock.now()
    specs: list[tuple[str, str, TaskStatus, dict[str, str]]] = [
        ("app.a", "default", PENDING, {"tenant": "acme"}),
        ("app.b", "default", RUNNING, {"tenant": "acme", "kind": "x"}),
        ("app.a", "emails", SUCCESS, {"tenant": "globex", "kind": "x"}),
        ("app.b", "emails", FAILED, {}),
        ("app.a", "default", SUCCESS, {"tenant": "acme", "kind": "y"}),
        ("app.c", "default", PENDING, {"kind": "x"}),
        ("app.a", "emails", FAILED, {"tenant": "acme", "kind": "x", "extra": "1"}),
        ("app.b", "default", SUCCESS, {"tenant": "globex"}),
    ]
    records = []
    for i, (func, queue, status, tags) in enumerate(specs):
        created = await create_task(
            backend,
            clock,
            func_name=func,
            queue=queue,
            status=status,
            tags=tags,
            created_at=base + seconds(10 * i),
        )
        records.append(created)
    return records


class QueryTests(ConformanceBase):
    """``query``: every filter, the order, and keyset pagination."""

    async def test_query_empty_store(self, backend: TaskBackend) -> None:
        """An empty store gives an empty last page.

        If this fails, check that query() of nothing returns ``items=[]`` and no cursor.
        """
        page = await backend.query(TaskQuery())
        assert page.items == [] and page.next_cursor is None

    async def test_query_all_newest_first(self, backend: TaskBackend, clock: ManualClock) -> None:
        """Without filters every task comes back, newest ``created_at`` first, no logs.

        If this fails, check the ``ORDER BY created_at DESC, task_id DESC`` and that query
        items are full records without their logs.
        """
        records = await seed(backend, clock)
        await backend.append_logs(
            records[0].task_id, [LogEntry(timestamp=clock.now(), message="x")]
        )
        page = await backend.query(TaskQuery())
        assert [r.task_id for r in page.items] == newest_first(records)
        assert page.next_cursor is None
        by_id = {r.task_id: r for r in records}
        for item in page.items:
            assert item.logs == [], "query items carry no logs"
            assert item == by_id[item.task_id]

    async def test_query_ties_ordered_by_task_id_desc(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Tasks created at the same instant are ordered by ``task_id`` descending.

        If this fails, check the secondary sort key (``task_id DESC``).
        """
        created = clock.now()
        records = [await create_task(backend, clock, created_at=created) for _ in range(6)]
        page = await backend.query(TaskQuery())
        assert [r.task_id for r in page.items] == sorted((r.task_id for r in records), reverse=True)

    @pytest.mark.parametrize(
        "query, expected",
        [
            (TaskQuery(statuses=[SUCCESS]), [2, 4, 7]),
            (TaskQuery(statuses=[PENDING, FAILED]), [0, 3, 5, 6]),
            (TaskQuery(func_name="app.a"), [0, 2, 4, 6]),
            (TaskQuery(func_name="app.missing"), []),
            (TaskQuery(queue="emails"), [2, 3, 6]),
            (TaskQuery(tags={"tenant": "acme"}), [0, 1, 4, 6]),
            (TaskQuery(tags={"tenant": "acme", "kind": "x"}), [1, 6]),
            (TaskQuery(tags={"kind": "x", "tenant": "nobody"}), []),
            (TaskQuery(statuses=[SUCCESS, FAILED], func_name="app.a", queue="emails"), [2, 6]),
            (TaskQuery(func_name="app.b", tags={"tenant": "globex"}), [7]),
        ],
        ids=[
            "status",
            "statuses",
            "func",
            "func-none",
            "queue",
            "tag",
            "tags-all-pairs",
            "tags-no-match",
            "status+func+queue",
            "func+tag",
        ],
    )
    async def test_query_filters(
        self, backend: TaskBackend, clock: ManualClock, query: TaskQuery, expected: list[int]
    ) -> None:
        """Each filter alone and combined (AND); ``tags`` must match every given pair.

        If this fails, check the WHERE clause of the filter named in the test id.
        """
        records = await seed(backend, clock)
        page = await backend.query(query)
        assert [r.task_id for r in page.items] == newest_first(records[i] for i in expected)

    async def test_query_time_range(self, backend: TaskBackend, clock: ManualClock) -> None:
        """``created_after`` and ``created_before`` bound ``created_at``, alone and together.

        (Bounds here fall between tasks; which side an exact match lands on is not part
        of the contract.) If this fails, check the comparison of aware UTC datetimes.
        """
        base = clock.now()
        records = await seed(backend, clock)
        after = await backend.query(TaskQuery(created_after=base + seconds(25)))
        assert [r.task_id for r in after.items] == newest_first(records[3:])
        before = await backend.query(TaskQuery(created_before=base + seconds(55)))
        assert [r.task_id for r in before.items] == newest_first(records[:6])
        both = await backend.query(
            TaskQuery(
                created_after=base + seconds(15),
                created_before=base + seconds(45),
                statuses=[FAILED, SUCCESS],
            )
        )
        assert [r.task_id for r in both.items] == newest_first(records[2:5])

    async def test_query_limit(self, backend: TaskBackend, clock: ManualClock) -> None:
        """``limit`` caps a page and a cursor is returned when more tasks match.

        If this fails, check that query() applies the limit and sets ``next_cursor``.
        """
        records = await seed(backend, clock)
        page = await backend.query(TaskQuery(limit=1))
        assert [r.task_id for r in page.items] == newest_first(records)[:1]
        assert page.next_cursor is not None

    async def test_pagination_walks_every_task_once(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Following ``next_cursor`` visits every task exactly once, in order.

        Tasks share timestamps so ties straddle page boundaries; the last page has no
        cursor and no page is empty. If this fails, check the keyset predicate
        ``(created_at, task_id) < (cursor_created_at, cursor_task_id)``.
        """
        base = clock.now()
        records = [
            await create_task(backend, clock, created_at=base + seconds(i // 3)) for i in range(23)
        ]
        pages = await walk(backend, TaskQuery(limit=4))
        assert [len(p) for p in pages] == [4, 4, 4, 4, 4, 3]
        assert [r.task_id for p in pages for r in p] == newest_first(records)

    async def test_pagination_exact_multiple_ends_cleanly(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """When the matches fill the last page exactly, that page has no cursor.

        If this fails, check that next_cursor is set only when another item exists
        (fetch ``limit + 1`` rows to know).
        """
        base = clock.now()
        for i in range(6):
            await create_task(backend, clock, created_at=base + seconds(i))
        pages = await walk(backend, TaskQuery(limit=3))
        assert [len(p) for p in pages] == [3, 3]

    async def test_pagination_with_filter(self, backend: TaskBackend, clock: ManualClock) -> None:
        """A cursor keeps the query's filters on the next pages.

        If this fails, check that the keyset predicate is ANDed with the filters.
        """
        base = clock.now()
        records = []
        for i in range(12):
            status = SUCCESS if i % 3 else FAILED
            records.append(
                await create_task(backend, clock, status=status, created_at=base + seconds(i))
            )
        pages = await walk(backend, TaskQuery(statuses=[SUCCESS], limit=3))
        got = [r.task_id for p in pages for r in p]
        assert got == newest_first(r for r in records if r.status is SUCCESS)

    async def test_pagination_while_tasks_are_added(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Tasks added between pages never cause a duplicate or a miss.

        New (newer) tasks do not shift the later pages, and a task older than the
        cursor shows up on a later page. If this fails, check that pagination is
        keyset on ``(created_at, task_id)``, never OFFSET.
        """
        base = clock.now()
        original = [
            await create_task(backend, clock, created_at=base + seconds(i)) for i in range(20)
        ]
        seen: list[str] = []
        cursor: str | None = None
        late_old: TaskRecord | None = None
        for step in range(100):
            page = await backend.query(TaskQuery(limit=3, cursor=cursor))
            seen.extend(r.task_id for r in page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
            clock.advance(1)
            await create_task(backend, clock, created_at=base + seconds(100 + step))
            if step == 1:
                late_old = await create_task(backend, clock, created_at=base - seconds(5))
        assert late_old is not None
        assert len(seen) == len(set(seen)), "a task appeared on two pages"
        assert seen == newest_first([*original, late_old])

    async def test_order_is_creation_order_not_arrival_order(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Tasks stored out of creation order (late arrivals, records handed over with
        an older ``created_at``) still list newest ``created_at`` first, on every page,
        with and without a filter.

        If this fails, check that query() orders by ``(created_at, task_id)`` and not by
        when a record was stored, and that a walk over the stored order that stops early
        looks far enough back for records that arrived late.
        """
        base = clock.now()
        # arrival order: the newest first, then mostly in creation order, with
        # stragglers up to a minute late
        offsets = [200, 0, 10, 20, 5, 30, 40, -60, 50, 45, 60, 70, 1, 80, 90, 85, 100, 110, -30]
        records = []
        for i, offset in enumerate(offsets):
            status = FAILED if i % 4 == 0 else SUCCESS
            records.append(
                await create_task(backend, clock, status=status, created_at=base + seconds(offset))
            )
        pages = await walk(backend, TaskQuery(limit=4))
        assert [r.task_id for p in pages for r in p] == newest_first(records)
        failed = await walk(backend, TaskQuery(statuses=[FAILED], limit=2))
        assert [r.task_id for p in failed for r in p] == newest_first(
            r for r in records if r.status is FAILED
        )
        first = await backend.query(TaskQuery(limit=3))
        assert [r.task_id for r in first.items] == newest_first(records)[:3]
        # more arrive after those reads: again the newest first, and one far later
        # than any before
        for offset in (300, 120, 105, -600, 115, 121, 122, 123, 124):
            records.append(await create_task(backend, clock, created_at=base + seconds(offset)))
        first = await backend.query(TaskQuery(limit=3))
        assert [r.task_id for r in first.items] == newest_first(records)[:3]
        pages = await walk(backend, TaskQuery(limit=5))
        assert [r.task_id for p in pages for r in p] == newest_first(records)

    async def test_cursor_is_encode_cursor(self, backend: TaskBackend, clock: ManualClock) -> None:
        """A cursor built with ``models.encode_cursor`` is accepted: the page starts after it.

        If this fails, check that query() decodes cursors with ``models.decode_cursor``
        and that next_cursor is ``encode_cursor(last.created_at, last.task_id)``.
        """
        records = await seed(backend, clock)
        ordered = sorted(records, key=lambda r: (r.created_at, r.task_id), reverse=True)
        mark = ordered[2]
        page = await backend.query(TaskQuery(cursor=encode_cursor(mark.created_at, mark.task_id)))
        assert [r.task_id for r in page.items] == [r.task_id for r in ordered[3:]]
        first = await backend.query(TaskQuery(limit=3))
        last = first.items[-1]
        assert first.next_cursor == encode_cursor(last.created_at, last.task_id)

    @pytest.mark.parametrize(
        "cursor",
        [
            "not a cursor",
            base64.urlsafe_b64encode(b'{"a": 1}').decode(),
            "W10=",
            base64.urlsafe_b64encode(b'["2030-01-01T00:00:00+00:00", "a\\u0000b"]').decode(),
            base64.urlsafe_b64encode(b'["2030-01-01T00:00:00+00:00", "\\ud800"]').decode(),
        ],
        ids=["garbage", "json-object", "empty-list", "nul-in-id", "surrogate-in-id"],
    )
    async def test_malformed_cursor_raises_value_error(
        self, backend: TaskBackend, clock: ManualClock, cursor: str
    ) -> None:
        """A cursor ``encode_cursor`` did not make raises ``InvalidOperationError`` (a
        ``ValueError``), also one naming a task id no task can have.

        If this fails, check that query() decodes with ``models.decode_cursor`` before
        running anything and lets its error through.
        """
        await create_task(backend, clock)
        with pytest.raises(InvalidOperationError, match="malformed task list cursor"):
            await backend.query(TaskQuery(cursor=cursor))

    @pytest.mark.parametrize("text", ["a\x00b", "\ud800"], ids=["nul", "surrogate"])
    async def test_a_filter_no_store_can_hold_matches_nothing(
        self, backend: TaskBackend, clock: ManualClock, text: str
    ) -> None:
        """A function, queue, tag or text (``q``) filter holding a NUL or a lone
        surrogate gives an empty page, as any filter no task matches: no stored text
        holds one (a user typed it in a search box, or a URL carried ``%00``).
        ``durations(func_names=...)`` leaves such a name out.

        If this fails, your server or driver refused the value itself: answer the empty
        page first when ``fastapi_taskflow.limits.unmatchable(query)`` is True (and
        keep only ``limits.storable_names(func_names)``).
        """
        await create_task(backend, clock, tags={"k": "v"})
        filters: list[dict[str, object]] = [
            {"func_name": text},
            {"queue": text},
            {"tags": {"k": text}},
            {"tags": {text: "v"}},
            {"q": text},
        ]
        for fields in filters:
            page = await backend.query(TaskQuery(**fields))  # type: ignore[arg-type]
            assert (page.items, page.next_cursor) == ([], None), fields
        assert await backend.durations(func_names=[text]) == {}
        assert len((await backend.query(TaskQuery())).items) == 1
