"""``write_many`` on SQL: the creates and the changes of one call are one transaction.

A database-level failure of the changes (a trigger refusing an UPDATE) leaves none of
the call's new rows behind, and one call costs one commit (SQLite: one writer batch;
MySQL and PostgreSQL's generic path: one COMMIT; PostgreSQL on asyncpg: one statement).
Each dialect's combined write also returns and stores exactly what ``create_many``
then ``transition_many`` do.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, text

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.errors import BackendUnavailableError
from fastapi_taskflow.models import TaskRecord, TaskStatus, TaskUpdate, Transition
from taskflow_sql import SQLBackend, SQLBackendError

pytestmark = pytest.mark.anyio

P, R, S, F = TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.SUCCESS, TaskStatus.FAILED


def _record(clock: ManualClock, task_id: str, **fields: Any) -> TaskRecord:
    now = clock.now()
    fields.setdefault("func_name", "jobs.f")
    return TaskRecord(task_id=task_id, created_at=now, updated_at=now, **fields)


def _step(task_id: str, expected: TaskStatus, new: TaskStatus, **update: Any) -> Transition:
    return Transition(task_id, frozenset({expected}), new, TaskUpdate(**update) if update else None)


async def _refuse_boom(backend: SQLBackend) -> None:
    """Triggers that fail every write of a task row with ``error = 'boom'`` (an UPDATE,
    or an INSERT of a row already changed: PostgreSQL's one-statement write inserts a
    task created and changed by the same call that way)."""
    tasks = backend.tables.tasks
    table = backend.engine.dialect.identifier_preparer.format_table(tasks)
    if backend.kind == "sqlite":
        statements = [
            f"CREATE TRIGGER tf_boom_{event} BEFORE {event} ON {table} "
            "WHEN NEW.error = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END"
            for event in ("INSERT", "UPDATE")
        ]
    elif backend.kind == "postgresql":
        function = f'"{tasks.schema}".tf_boom' if tasks.schema else "tf_boom"
        statements = [
            f"CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.error = 'boom' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$",
            f"CREATE TRIGGER tf_boom BEFORE INSERT OR UPDATE ON {table} FOR EACH ROW "
            f"EXECUTE FUNCTION {function}()",
        ]
    else:
        statements = [
            f"CREATE TRIGGER {tasks.name}_boom_{event} BEFORE {event} ON {table} "
            "FOR EACH ROW BEGIN IF NEW.error = 'boom' THEN "
            "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'boom'; END IF; END"
            for event in ("INSERT", "UPDATE")
        ]
    async with backend.engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement))


@contextmanager
def _commits(backend: SQLBackend) -> Iterator[list[int]]:
    """Count the write transactions the backend commits meanwhile (``[n]``): SQLite's
    writer batches, SQLAlchemy's COMMITs elsewhere, plus the statements PostgreSQL's
    asyncpg fast path sends (each its own transaction)."""
    counted = [0]
    if backend.kind == "sqlite":
        writer = backend._exec.writer
        assert writer is not None
        before = writer.batches
        yield counted
        counted[0] = writer.batches - before
        return

    def commit(_conn: Any) -> None:
        counted[0] += 1

    fast = backend._pg_write
    original = fast._fetch if fast is not None else None

    async def fetch(*args: Any) -> Any:
        counted[0] += 1
        assert original is not None
        return await original(*args)

    sync_engine = backend.engine.sync_engine
    event.listen(sync_engine, "commit", commit)
    if fast is not None:
        fast._fetch = fetch  # type: ignore[method-assign]
    try:
        yield counted
    finally:
        event.remove(sync_engine, "commit", commit)
        if fast is not None:
            del fast._fetch


async def _open(place: Any, clock: ManualClock, *, generic: bool = False) -> SQLBackend:
    backend: SQLBackend = place.backend(clock)
    await backend.open()
    if generic:  # PostgreSQL without the asyncpg statements: SQLAlchemy's
        backend._pg_write = None
    return backend


@pytest.fixture(
    params=["sqlite", "postgres", "postgres-generic", "mysql"],
)
def where(request: pytest.FixtureRequest) -> tuple[Any, bool]:
    """A place on each dialect, and whether PostgreSQL's generic path is forced."""
    name = request.param
    place = request.getfixturevalue(f"{name.split('-')[0]}_place")
    return place, name.endswith("generic")


async def test_failed_changes_leave_no_new_row(where: tuple[Any, bool]) -> None:
    """The changes of a call fail in the database: the call's creates are rolled back
    with them (nothing of it is stored, the counters unchanged), for a change to a
    stored task and one to a task created by the same call."""
    place, generic = where
    clock = ManualClock()
    backend = await _open(place, clock, generic=generic)
    try:
        await _refuse_boom(backend)
        stored = await backend.create(_record(clock, "old"))
        assert stored.created
        calls = [
            ([_record(clock, "new1")], [_step("old", P, F, error="boom")]),
            ([_record(clock, "new2")], [_step("new2", P, F, error="boom")]),
        ]
        for creates, changes in calls:
            with pytest.raises(SQLBackendError) as caught:
                await backend.write_many(creates, changes)
            assert not isinstance(caught.value, BackendUnavailableError)
            assert await backend.get(creates[0].task_id) is None
        assert await backend.get("old") == stored.record
        assert (await backend.stats()).by_status == {P: 1}
        created, moved = await backend.write_many(
            [_record(clock, "new3")], [_step("old", P, F, error="fine")]
        )
        assert created[0].created and moved[0] is not None and moved[0].status is F
        assert (await backend.stats()).by_status == {P: 1, F: 1}
    finally:
        await backend.close()


async def test_one_commit_per_call(where: tuple[Any, bool]) -> None:
    """A call with new records and changes commits once: creates and changes of 25
    tasks each, a change to a task created by the same call, and a call larger than
    one statement takes (1,100 new records, 300 changes)."""
    place, generic = where
    clock = ManualClock()
    backend = await _open(place, clock, generic=generic)
    try:
        await backend.create_many([_record(clock, f"a{i:02}") for i in range(25)])
        now = clock.advance(1)
        calls = [
            (
                [_record(clock, f"b{i:02}") for i in range(25)],
                [_step(f"a{i:02}", P, R, owner="me", started_at=now) for i in range(25)],
            ),
            ([_record(clock, "c")], [_step("c", P, R, owner="me")]),
            (
                [_record(clock, f"d{i:04}", idempotency_key=f"dk{i}") for i in range(1100)],
                [_step(f"d{i:04}", P, R, owner="me", attempt=i % 3) for i in range(300)],
            ),
        ]
        for creates, changes in calls:
            with _commits(backend) as commits:
                created, moved = await backend.write_many(creates, changes)
            assert all(result.created for result in created)
            assert all(record is not None and record.status is R for record in moved)
            assert commits == [1]
        assert (await backend.stats()).by_status == {P: 825, R: 326}
    finally:
        await backend.close()


async def _scenario(backend: SQLBackend, clock: ManualClock, combined: bool) -> Any:
    """Creates meeting stored ids and keys (one held by a task the same call finishes,
    releasing the key), changes that win, lose or name nothing, many rows, counters."""
    stored = [_record(clock, f"s{i:03}", idempotency_key=f"k{i}") for i in range(300)]
    await backend.create_many(stored)
    await backend.transition_many([_step(f"s{i:03}", P, R, owner="w") for i in range(150)])
    now = clock.advance(1)
    creates = [
        _record(clock, f"n{i:03}", args=[i], idempotency_key=f"new{i}", owner="o")
        for i in range(200)
    ]
    creates.insert(5, _record(clock, "s201"))  # an id taken by a stored task
    creates.insert(9, _record(clock, "x1", idempotency_key="k2"))  # its holder finishes
    creates.insert(11, _record(clock, "x2", idempotency_key="k200"))  # a PENDING holder
    creates += [_record(clock, "z1"), _record(clock, "z2", owner="o"), _record(clock, "s202")]
    changes = [_step(f"s{i:03}", R, S, finished_at=now, result={"i": i}) for i in range(140)]
    changes += [_step(f"s{i:03}", P, R, owner="v", started_at=now) for i in range(140, 160)]
    changes += [_step(f"s{i:03}", R, F, error="late") for i in range(290, 300)]  # refused
    changes += [_step("missing", P, R), _step("s010", R, S, progress=0.5)]
    changes.append(Transition("s011", frozenset(), R))
    # Changes to tasks of the same call: new ones (one started, one finished, one in a
    # status the change does not expect) and one whose id a stored task holds.
    changes.append(_step("n003", P, R, owner="me", started_at=now))
    changes.append(_step("z1", P, S, finished_at=now, result=[1], progress=0.25))
    changes.append(_step("z2", R, S))
    changes.append(_step("s202", P, R, owner="other", attempt=2))
    # Then a record created and finished by one call, releasing its key.
    later = ([_record(clock, "y1", idempotency_key="yk")], [_step("y1", P, F, error="e")])
    if combined:
        with _commits(backend) as commits:
            created, moved = await backend.write_many(creates, changes)
        assert commits == [1]  # PostgreSQL on asyncpg: the one-statement way
        with _commits(backend) as commits:
            created_later, moved_later = await backend.write_many(*later)
        assert commits == [1]
    else:
        created = await backend.create_many(creates)
        moved = await backend.transition_many(changes)
        created_later = await backend.create_many(later[0])
        moved_later = await backend.transition_many(later[1])
    created += created_later
    moved += moved_later
    stats = await backend.stats()
    return (
        [(result.created, result.record) for result in created],
        moved,
        stats.by_status,
        stats.by_func,
        [await backend.get(task_id) for task_id in ("x1", "s002", "z1", "z2", "s202", "y1")],
        await backend.owned("me"),
        await backend.owned("other"),
        await backend.find_by_key("yk"),
    )


async def test_write_many_equals_the_two_calls(where: tuple[Any, bool]) -> None:
    """The same creates and changes, written by ``write_many`` on one table set and by
    ``create_many`` then ``transition_many`` on another, return and store the same."""
    place, generic = where
    outcomes = []
    for combined in (True, False):
        clock = ManualClock()
        prefix = place.prefix + ("" if combined else "b_")
        backend = SQLBackend(place.url, table_prefix=prefix, schema=place.schema, clock=clock)
        await backend.open()
        if generic:
            backend._pg_write = None
        try:
            outcomes.append(await _scenario(backend, clock, combined))
        finally:
            await backend.close()
    assert outcomes[0] == outcomes[1]
    created = outcomes[0][0]
    assert [flag for flag, _ in created].count(False) == 4
    assert created[5][1].task_id == "s201" and created[5][1].status is P
    assert created[9][1].task_id == "s002" and created[9][1].status is R
    assert created[11][1].task_id == "s200"
    moved = outcomes[0][1]
    assert moved[-5] is not None and moved[-5].status is R and moved[-5].owner == "me"
    assert moved[-4] is not None and moved[-4].status is S and moved[-4].result == [1]
    assert moved[-3] is None
    assert moved[-2] is not None and moved[-2].task_id == "s202" and moved[-2].attempt == 2
    assert created[-2][1].task_id == "s202" and created[-2][1].status is P
    assert moved[-1] is not None and moved[-1].status is F
