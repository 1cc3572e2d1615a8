"""The admin's reads on a memory store read what they answer, not every kept record.

The dashboard lists the newest tasks every few seconds and reads the stats every 30 s,
on the app's event loop, while the store holds its lock (which every task's create,
start and finish take too). A task list's first page used to filter and sort every
kept record, and ``durations()`` to read every finished task. These tests count the
records a read looks at (a record type that counts reads of its ``created_at`` or
``started_at``), so they do not depend on the machine's speed.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

import pytest

from fastapi_taskflow.models import DURATION_WINDOW, LiveRecord, TaskQuery, TaskStatus
from taskflow_memory import MemoryBackend

pytestmark = pytest.mark.anyio

BASE = datetime(2030, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Counted(LiveRecord):
    """A kept record that counts how often a read looks at it."""

    __slots__ = ("_created", "_started")
    reads: ClassVar[int] = 0

    @property  # type: ignore[override]
    def created_at(self) -> datetime:
        Counted.reads += 1
        return self._created

    @created_at.setter
    def created_at(self, value: datetime) -> None:
        self._created = value

    @property  # type: ignore[override]
    def started_at(self) -> datetime | None:
        Counted.reads += 1
        return self._started

    @started_at.setter
    def started_at(self, value: datetime | None) -> None:
        self._started = value


def keep(backend: MemoryBackend, n: int, created: datetime, **fields: Any) -> Counted:
    """Hand the store a record (as the engine does) created at ``created``."""
    record = Counted(f"task-{n:07d}", fields.pop("func_name", "app.job"), created)
    for name, value in fields.items():
        setattr(record, name, value)
    assert backend.create_now(record) is None
    return record


def newest_first(backend: MemoryBackend) -> list[str]:
    records = backend._state.records.values()
    ordered = sorted(records, key=lambda r: (r._created, r.task_id), reverse=True)  # type: ignore[attr-defined]
    return [r.task_id for r in ordered]


async def test_the_first_page_reads_about_a_page_whatever_is_kept() -> None:
    backend = MemoryBackend(max_records=None)
    for n in range(20_000):
        keep(backend, n, BASE + timedelta(seconds=n))
    first = await backend.query(TaskQuery(limit=50))  # learns the order once
    assert [r.task_id for r in first.items] == newest_first(backend)[:50]

    Counted.reads = 0
    again = await backend.query(TaskQuery(limit=50))
    assert again.items == first.items
    # a few reads per listed record (walk, sort, snapshot); every kept one before
    assert Counted.reads < 10 * 50, Counted.reads

    # 100 more, in creation order but for one that arrives 30 s late: the next read
    # folds in the 100 and looks 30 s further back
    for n in range(20_000, 20_100):
        late = 30 if n == 20_050 else 0
        keep(backend, n, BASE + timedelta(seconds=n - late))
    Counted.reads = 0
    page = await backend.query(TaskQuery(limit=50))
    assert [r.task_id for r in page.items] == newest_first(backend)[:50]
    assert Counted.reads < 10 * (50 + 30 + 100), Counted.reads


async def test_pages_stay_in_creation_order_while_old_records_are_trimmed() -> None:
    """The record a read last folded in is trimmed away: the next read learns the
    order again from what is kept (nothing is listed out of order)."""
    backend = MemoryBackend(max_records=300)
    shuffled = random.Random(7)
    for n in range(1_000):
        jitter = shuffled.randint(-120, 0)  # up to two minutes late
        finished = BASE + timedelta(seconds=n)
        keep(
            backend,
            n,
            BASE + timedelta(seconds=n + jitter),
            status=TaskStatus.SUCCESS,
            finished_at=finished,
        )
        if n in (150, 160, 600, 610, 999):  # 160 -> 600: the last record read is trimmed
            expected = newest_first(backend)
            listed: list[str] = []
            cursor = None
            while True:
                page = await backend.query(TaskQuery(limit=40, cursor=cursor))
                listed += [r.task_id for r in page.items]
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
            assert listed == expected


async def test_durations_read_each_functions_window_of_newest_finished_tasks() -> None:
    backend = MemoryBackend(max_records=None)
    many = 5 * DURATION_WINDOW

    def ran(n: int, func_name: str, status: TaskStatus, took: float) -> None:
        start = BASE + timedelta(seconds=n)
        finished = start + timedelta(seconds=took)
        keep(
            backend,
            n,
            start,
            func_name=func_name,
            status=status,
            started_at=start,
            finished_at=finished,
        )

    for n in range(many):  # app.busy: the newest finished took 2 s, older ones 1 s
        ran(n, "app.busy", TaskStatus.SUCCESS, 2.0 if n >= many - DURATION_WINDOW else 1.0)
    for n in range(many, many + 3):
        ran(n, "app.rare", TaskStatus.FAILED, 3.0)
    Counted.reads = 0
    stats = await backend.durations()
    assert stats["app.busy"].count == DURATION_WINDOW
    assert stats["app.busy"].p50 == stats["app.busy"].p99 == 2.0  # only the newest
    assert stats["app.rare"].count == 3 and stats["app.rare"].p50 == 3.0
    assert Counted.reads <= DURATION_WINDOW + 3  # of 5,003 finished tasks
    only = await backend.durations(func_names=["app.rare"])
    assert set(only) == {"app.rare"}
