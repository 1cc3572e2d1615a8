"""The group commit with two writes in flight at once (Redis: ``concurrent_writes = 2``).

While one write is on its way, the next one is built and sent on another connection.
Two connections keep no order between them, so: a record is written by one write only;
a change to a task whose record is in a write still in flight waits for that write's
answer; a flush returns only once every record buffered when it was called has left the
buffer, those of the other write included; an unreachable store fails every caller.

The writes are watched on a real Redis (the backend's own methods, wrapped): which ids
each one carries, when it began and ended, and how many were in flight at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager, TaskStatus
from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.errors import BackendUnavailableError
from fastapi_taskflow.group_commit import GroupCommit, concurrent_writes
from fastapi_taskflow.models import TaskRecord, Transition
from fastapi_taskflow.pending import PendingCreates
from taskflow_redis import RedisBackend

from .conftest import finish, record, start, unique_prefix

pytestmark = pytest.mark.anyio

PENDING, RUNNING, SUCCESS = TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.SUCCESS
DEADLINE = 10.0
"""Seconds a test waits for something the writes should do."""
OVERLAP_WAIT = 2.0
"""Seconds the first writes are held, waiting for a second one to begin beside them."""

_inside = contextvars.ContextVar("_inside", default=False)


@dataclass
class Call:
    """One write the store received."""

    creates: list[TaskRecord]
    changes: list[Transition]
    began: int
    ended: int | None = None
    release: asyncio.Event | None = None
    fail: BaseException | None = None

    def names(self, task_id: str) -> bool:
        return any(r.task_id == task_id for r in self.creates) or any(
            c.task_id == task_id for c in self.changes
        )


@dataclass
class Watch:
    """Wraps ``backend``'s write methods: records every call, can hold one."""

    backend: RedisBackend
    calls: list[Call] = field(default_factory=list)
    active: int = 0
    most: int = 0
    hold_when: Callable[[Call], bool] | None = None
    held: Call | None = None
    overlap_wanted: int = 0
    """How many lone writes may still be held until a second one begins beside them."""
    _clock: itertools.count[int] = field(default_factory=itertools.count)
    _second: asyncio.Event = field(default_factory=asyncio.Event)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> Watch:
        backend = self.backend
        write_many, create_many = backend.write_many, backend.create_many
        transition_many = backend.transition_many

        async def watched_write_many(creates: Any, changes: Any) -> Any:
            return await self._call(creates, changes, lambda: write_many(creates, changes))

        async def watched_create_many(creates: Any) -> Any:
            return await self._call(creates, [], lambda: create_many(creates))

        async def watched_transition_many(changes: Any) -> Any:
            return await self._call([], changes, lambda: transition_many(changes))

        monkeypatch.setattr(backend, "write_many", watched_write_many)
        monkeypatch.setattr(backend, "create_many", watched_create_many)
        monkeypatch.setattr(backend, "transition_many", watched_transition_many)
        return self

    async def _call(
        self, creates: Sequence[TaskRecord], changes: Sequence[Transition], real: Any
    ) -> Any:
        if _inside.get():
            return await real()  # one write method calling another: one write
        inside = _inside.set(True)
        call = Call(list(creates), list(changes), began=next(self._clock))
        self.calls.append(call)
        self.active += 1
        self.most = max(self.most, self.active)
        if self.active > 1:
            self._second.set()
        try:
            if self.hold_when is not None and self.held is None and self.hold_when(call):
                call.release = asyncio.Event()
                self.held = call
                await call.release.wait()
            elif self.overlap_wanted and self.active == 1:
                # Wait a moment for a second write: the engine sends it while this one is
                # on its way (not after it, as writes in lock step would).
                self.overlap_wanted -= 1
                self._second.clear()
                with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                    await asyncio.wait_for(self._second.wait(), OVERLAP_WAIT)
                if self.active > 1:
                    self.overlap_wanted = 0
            if call.fail is not None:
                raise call.fail
            return await real()
        finally:
            self.active -= 1
            call.ended = next(self._clock)
            _inside.reset(inside)

    def with_id(self, task_id: str) -> list[Call]:
        return [call for call in self.calls if call.names(task_id)]


async def until(check: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not check():
        assert loop.time() < deadline, f"{what} did not happen within {DEADLINE:.0f}s"
        await asyncio.sleep(0.005)


def group_commit(backend: RedisBackend, pending: PendingCreates, clock: ManualClock) -> GroupCommit:
    return GroupCommit(backend, asyncio.get_running_loop(), pending, now=clock.now)


def test_redis_takes_two_writes_at_once() -> None:
    backend = RedisBackend("redis://127.0.0.1:6379/0")
    assert concurrent_writes(backend) == 2
    assert concurrent_writes(backend.fork()) == 2


async def test_an_engine_keeps_two_writes_in_flight_and_none_overtakes(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests in flight, one task each (benchmark E): two writes are on their way at
    once, never more; every record is written by exactly one write; a status change
    to a task is sent only after the write of its record has been answered (or with
    it, folded); every task runs once and ends SUCCESS."""
    prefix = unique_prefix()
    tm = TaskManager(backend=f"{redis_url}?prefix={prefix}", publish_events=False)
    ran: Counter[int] = Counter()
    tasks, lanes = 400, 50

    @tm.task()
    async def job(i: int) -> int:
        ran[i] += 1
        return i

    async def request(i: int) -> str:
        container = ManagedBackgroundTasks(tm)
        task_id = container.add_task(job, i)
        await container()
        return task_id

    ids: list[str] = []

    async def lane(first: int) -> None:
        for i in range(first, tasks, lanes):
            ids.append(await request(i))

    try:
        async with tm:
            watch = Watch(tm._engine.backend, overlap_wanted=5).install(monkeypatch)
            await asyncio.gather(*(lane(n) for n in range(lanes)))
            records = [await tm.store.aget(task_id) for task_id in ids]
    finally:
        cleanup = RedisBackend(redis_url, prefix=prefix)
        await cleanup.open()
        await cleanup.delete_all()
        await cleanup.close()
    assert [r.status if r else None for r in records] == [SUCCESS] * tasks
    assert ran == Counter(range(tasks)), "a task ran twice, or not at all"
    assert watch.most == 2, f"at most {watch.most} write(s) in flight at once"
    created = Counter(r.task_id for call in watch.calls for r in call.creates)
    assert set(created) == set(ids)
    assert [task_id for task_id, n in created.items() if n > 1] == [], "written twice"
    folded = sum(1 for call in watch.calls for r in call.creates if r.status is RUNNING)
    assert folded > 0, "no start was folded into its record"
    create_call = {r.task_id: call for call in watch.calls for r in call.creates}
    for call in watch.calls:
        for change in call.changes:
            made = create_call[change.task_id]
            if made is not call:
                assert made.ended is not None and made.ended < call.began, (
                    f"a change to {change.task_id} was sent before its record's write was answered"
                )


async def test_a_flush_waits_for_the_records_of_the_write_in_flight(
    backend: RedisBackend, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush called while a write is on its way: its own write goes at once, beside
    the first, without that write's record; it returns only once both are settled."""
    pending = PendingCreates()
    group = group_commit(backend, pending, clock)
    assert group.writes_at_once == 2
    first, second = record(clock, "first"), record(clock, "second")
    watch = Watch(backend, hold_when=lambda call: call.names("first")).install(monkeypatch)
    pending.add(first)
    flushing_first = asyncio.create_task(group.flush())
    await until(lambda: watch.held is not None, "the first write")
    pending.add(second)
    flushing_second = asyncio.create_task(group.flush())
    await until(lambda: any(c.ended is not None for c in watch.with_id("second")), "write 2")
    assert watch.most == 2
    assert [[r.task_id for r in c.creates] for c in watch.calls] == [["first"], ["second"]]
    await until(lambda: "second" not in pending, "the second record settled")
    assert not flushing_second.done(), "a flush returned before the first record was stored"
    assert "first" in pending
    assert watch.held is not None and watch.held.release is not None
    watch.held.release.set()
    await asyncio.wait_for(asyncio.gather(flushing_first, flushing_second), DEADLINE)
    assert len(pending) == 0
    assert await backend.get("first") == first
    assert await backend.get("second") == second
    assert len(watch.calls) == 2, "a record was written again"


async def test_a_change_waits_for_the_write_of_its_record(
    backend: RedisBackend, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start asked for while its task's record is in a write still in flight is not
    sent beside it (another connection could overtake the create): it goes in a later
    write, once the record's write is answered. Other tasks' changes do not wait."""
    pending = PendingCreates()
    group = group_commit(backend, pending, clock)
    await backend.create(record(clock, "other", RUNNING))
    new = record(clock, "new")
    watch = Watch(backend, hold_when=lambda call: call.names("new")).install(monkeypatch)
    pending.add(new)
    flushing = asyncio.create_task(group.flush())
    await until(lambda: watch.held is not None, "the record's write")
    starting = asyncio.create_task(group.transition(start("new")))
    finishing = asyncio.create_task(group.transition(finish("other")))
    finished = await asyncio.wait_for(finishing, DEADLINE)  # not held behind "new"
    assert finished is not None and finished.status is SUCCESS
    assert [c.task_id for c in watch.with_id("other")[0].changes] == ["other"]
    assert not starting.done()
    assert len(watch.with_id("new")) == 1, "the start was sent beside its record's write"
    assert watch.held is not None and watch.held.release is not None
    watch.held.release.set()
    started = await asyncio.wait_for(starting, DEADLINE)
    await flushing
    assert isinstance(started, TaskRecord) and started.status is RUNNING
    made, moved = watch.with_id("new")
    assert [r.task_id for r in made.creates] == ["new"] and made.ended is not None
    assert [c.task_id for c in moved.changes] == ["new"] and moved.began > made.ended


async def test_an_unreachable_store_fails_the_callers_of_both_writes(
    backend: RedisBackend, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first of two writes in flight fails as unreachable: its status change's
    caller gets the error, and so does the flush of the second write (its caller's
    records include the first write's, still buffered); the next flush writes them."""
    pending = PendingCreates()
    group = group_commit(backend, pending, clock)
    await backend.create(record(clock, "waiting"))
    watch = Watch(backend, hold_when=lambda call: call.names("lost")).install(monkeypatch)
    pending.add(record(clock, "lost"))
    starting = asyncio.create_task(group.transition(start("waiting")))
    flushing_first = asyncio.create_task(group.flush())
    await until(lambda: watch.held is not None, "the first write")
    assert watch.held is not None and watch.held.release is not None
    assert [c.task_id for c in watch.held.changes] == ["waiting"]
    pending.add(record(clock, "kept"))
    flushing_second = asyncio.create_task(group.flush())
    await until(lambda: any(c.ended is not None for c in watch.with_id("kept")), "write 2")
    watch.held.fail = BackendUnavailableError("the store went away")
    watch.held.release.set()
    for waiting in (starting, flushing_first, flushing_second):
        with pytest.raises(BackendUnavailableError):
            await asyncio.wait_for(waiting, DEADLINE)
    assert "lost" in pending and "kept" not in pending
    await group.flush()
    assert len(pending) == 0
    assert await backend.get("lost") is not None
    assert [[r.task_id for r in c.creates] for c in watch.calls] == [["lost"], ["kept"], ["lost"]]


async def test_one_write_at_a_time_when_asked(
    backend: RedisBackend, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``writes_at_once=1`` (a store without ``concurrent_writes``, SQLite): the second
    flush's write waits for the first to be answered."""
    pending = PendingCreates()
    group = GroupCommit(
        backend, asyncio.get_running_loop(), pending, now=clock.now, writes_at_once=1
    )
    watch = Watch(backend, hold_when=lambda call: call.names("first")).install(monkeypatch)
    pending.add(record(clock, "first"))
    flushing_first = asyncio.create_task(group.flush())
    await until(lambda: watch.held is not None, "the first write")
    pending.add(record(clock, "second"))
    flushing_second = asyncio.create_task(group.flush())
    for _ in range(20):  # turns of the loop in which a second write would begin
        await asyncio.sleep(0)
    assert len(watch.calls) == 1
    assert watch.held is not None and watch.held.release is not None
    watch.held.release.set()
    await asyncio.wait_for(asyncio.gather(flushing_first, flushing_second), DEADLINE)
    assert watch.most == 1
    assert [[r.task_id for r in c.creates] for c in watch.calls] == [["first"], ["second"]]
