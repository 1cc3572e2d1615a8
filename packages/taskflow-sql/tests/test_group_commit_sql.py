"""transition_many as the SQL backends write it: many shapes, big batches, every field.

Each item must end exactly as :meth:`transition` would leave it, whichever statement
(multi-row UPDATE FROM on SQLite/PostgreSQL, the single PostgreSQL statement with its
counters, MySQL's locking read + UPDATE JOIN) carried it.
"""

from __future__ import annotations

from typing import Any

import pytest

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.models import TaskQuery, TaskRecord, TaskStatus, TaskUpdate, Transition
from taskflow_sql import SQLBackend

pytestmark = pytest.mark.anyio

P, R, S, F = TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.SUCCESS, TaskStatus.FAILED


@pytest.fixture
async def pair(place: Any) -> Any:
    """Two stores on the engine: one written by transition_many, one by transition."""
    clock = ManualClock()
    grouped = SQLBackend(place.url, table_prefix=place.prefix, schema=place.schema, clock=clock)
    single = SQLBackend(
        place.url, table_prefix=place.prefix + "b_", schema=place.schema, clock=clock
    )
    await grouped.open()
    await single.open()
    yield grouped, single, clock
    await grouped.close()
    await single.close()


def _records(clock: ManualClock, n: int) -> list[TaskRecord]:
    now = clock.now()
    return [
        TaskRecord(
            task_id=f"t{i:04}",
            func_name=f"f{i % 3}",
            status=R if i % 4 == 3 else P,
            idempotency_key=f"k{i}",
            owner="old" if i % 2 else None,
            created_at=now,
            updated_at=now,
        )
        for i in range(n)
    ]


def _work(clock: ManualClock, n: int) -> list[Transition]:
    now = clock.now()
    items = []
    for i in range(n):
        kind = i % 5
        task_id = f"t{i:04}"
        if kind == 0:
            update = TaskUpdate(started_at=now, attempt=1, owner=f"me{i % 2}")
            items.append(Transition(task_id, frozenset({P}), R, update))
        elif kind == 1:
            update = TaskUpdate(finished_at=now, result={"i": i, "s": "é"}, progress=1.0)
            items.append(Transition(task_id, frozenset({P, R}), S, update))
        elif kind == 2:
            update = TaskUpdate(finished_at=now, error="boom", cancel_requested=True)
            items.append(Transition(task_id, frozenset({P}), F, update))
        elif kind == 3:  # some are RUNNING: they lose the compare-and-set
            items.append(Transition(task_id, frozenset({P}), TaskStatus.CANCELLED))
        else:
            items.append(Transition(task_id, frozenset({R}), P, TaskUpdate(owner=None)))
    items.append(Transition("missing", frozenset({P}), R))
    return items


@pytest.mark.parametrize("n", [7, 300])
async def test_transition_many_equals_transition_one_by_one(pair: Any, n: int) -> None:
    grouped, single, clock = pair
    for backend in (grouped, single):
        await backend.create_many(_records(clock, n))
    clock.advance(5)
    work = _work(clock, n)
    many = await grouped.transition_many(work)
    one = [
        await single.transition(t.task_id, expected=t.expected, new=t.new, update=t.update)
        for t in work
    ]
    assert [r is None for r in many] == [r is None for r in one]
    assert many == one
    assert sum(r is not None for r in many) > n // 2
    for item in work[:-1]:
        assert await grouped.get(item.task_id) == await single.get(item.task_id)
    assert await grouped.stats() == await single.stats()
    assert await grouped.owners() == await single.owners()
    for owner in await grouped.owners():
        assert await grouped.owned(owner, limit=1000) == await single.owned(owner, limit=1000)
    # Keys released by FAILED are free again, on both.
    released = [t.task_id for t, r in zip(work, many, strict=False) if r and r.status is F]
    assert released
    assert await grouped.find_by_key(f"k{int(released[0][1:])}") is None


async def test_transition_many_empty_and_unknown(pair: Any) -> None:
    grouped, _, _ = pair
    assert await grouped.transition_many([]) == []
    assert await grouped.transition_many([Transition("nope", frozenset({P}), R)]) == [None]
    assert await grouped.transition_many([Transition("nope", frozenset(), R)]) == [None]


def _batch(clock: ManualClock, start: int, n: int, **fields: Any) -> list[TaskRecord]:
    now = clock.now()
    return [
        TaskRecord(
            task_id=f"c{i:04}",
            func_name=f"f{i % 2}",
            idempotency_key=f"key{i}" if i % 3 else None,
            tags={"team": f"t{i % 2}"} if i % 4 == 0 else {},
            args=[i, "x"],
            kwargs={"b": True},
            created_at=now,
            updated_at=now,
            **fields,
        )
        for i in range(start, start + n)
    ]


async def test_create_many_equals_create_one_by_one(pair: Any) -> None:
    """A batch meeting stored ids and held keys ends as ``create`` would leave it."""
    grouped, single, clock = pair
    first = _batch(clock, 0, 40)
    for backend in (grouped, single):
        await backend.create_many(first)
    clock.advance(1)
    # Half the ids exist already; some keys are held by those; the rest are new.
    second = _batch(clock, 20, 1200)
    renamed = [
        r.model_copy(update={"task_id": f"n{r.task_id}"}) if i % 7 == 0 else r
        for i, r in enumerate(second)
    ]
    many = await grouped.create_many(renamed)
    one = [await single.create(record) for record in renamed]
    assert many == one
    assert sum(r.created for r in many) > 1000
    assert await grouped.stats() == await single.stats()
    for record in renamed[::37]:
        assert await grouped.get(record.task_id) == await single.get(record.task_id)
    page = await grouped.query(TaskQuery(tags={"team": "t0"}, limit=500))
    expected = await single.query(TaskQuery(tags={"team": "t0"}, limit=500))
    assert [r.task_id for r in page.items] == [r.task_id for r in expected.items]


async def test_mysql_create_many_survives_a_race_after_its_probe(
    mysql_place: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An id taken between the probe and the multi-row INSERT: the duplicate-key error
    rolls back that statement only, and each record is then created the create() way."""
    from taskflow_sql import sqlite_create

    clock = ManualClock()
    backend = SQLBackend(mysql_place.url, table_prefix=mysql_place.prefix, clock=clock)
    await backend.open()
    try:
        first = _batch(clock, 0, 10)
        await backend.create_many(first[:3])

        async def blind(*_: Any) -> tuple[set[str], set[str]]:
            return set(), set()  # as if the three were stored after the probe

        monkeypatch.setattr(sqlite_create, "_taken", blind)
        results = await backend.create_many(first)
        assert [r.created for r in results] == [False] * 3 + [True] * 7
        assert [r.record.task_id for r in results] == [r.task_id for r in first]
        assert (await backend.stats()).total == 10
    finally:
        await backend.close()
