"""Liveness: instance heartbeats, task ownership, adoption and group commit.

An instance proves it is alive with one heartbeat (``beat``), whatever the number of
tasks it holds; each active task names its owner on its record (``claim`` sets it).
Recovery compares ``owners()`` with ``heartbeats()`` and moves a dead owner's tasks to
itself with ``adopt``. The engine writes the starts and finishes of many tasks with one
``transition_many`` (group commit).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.models import (
    Applied,
    LogEntry,
    TaskRecord,
    TaskStatus,
    TaskUpdate,
    Transition,
)
from fastapi_taskflow.protocols import TaskBackend

from ._base import create_task, new_id, read_back, seconds
from ._threads import RacingBase
from .queues import Q, stored_ids

__all__ = ["LivenessTests"]

PENDING, RUNNING, SUCCESS, FAILED, CANCELLED = (
    TaskStatus.PENDING,
    TaskStatus.RUNNING,
    TaskStatus.SUCCESS,
    TaskStatus.FAILED,
    TaskStatus.CANCELLED,
)

BIG_BATCH = 300
"""How many transitions the large ``transition_many`` test sends in one call."""


def _step(
    task_id: str,
    expected: set[TaskStatus] | frozenset[TaskStatus],
    new: TaskStatus,
    update: TaskUpdate | None = None,
) -> Transition:
    """A :class:`Transition` item, ``expected`` frozen as the dataclass wants it."""
    return Transition(task_id=task_id, expected=frozenset(expected), new=new, update=update)


Plan = list[tuple[frozenset[TaskStatus], TaskStatus, TaskUpdate | None]]
"""The steps one task walks: (expected, new, update) each."""


def _plans() -> list[Plan]:
    """Steps for twin tasks: starts, finishes, a retry, refused and empty changes."""
    return [
        [
            (frozenset({PENDING}), RUNNING, TaskUpdate(attempt=1, owner="w")),
            (frozenset({RUNNING}), SUCCESS, TaskUpdate(result=[1, "x"], progress=1.0)),
        ],
        [
            (frozenset({PENDING}), RUNNING, None),
            (frozenset({RUNNING}), PENDING, TaskUpdate(attempt=2, error="retry")),
            (frozenset({SUCCESS}), FAILED, TaskUpdate(error="refused")),
        ],
        [
            (frozenset({RUNNING}), SUCCESS, None),
            (frozenset({PENDING, RUNNING}), FAILED, TaskUpdate(error="e", owner=None)),
            (frozenset(), RUNNING, None),
        ],
        [(frozenset({PENDING}), CANCELLED, TaskUpdate(cancel_requested=True))],
    ]


def _without_id(record: TaskRecord | None) -> dict[str, object] | None:
    """A record's fields minus the ones that differ between twin tasks."""
    if record is None:
        return None
    return record.model_dump(exclude={"task_id", "idempotency_key"})


class LivenessTests(RacingBase):
    """``beat``, ``heartbeats``, ``forget_instance``; ``owners``, ``owned``, ``adopt``;
    the owner ``claim`` writes; ``transition_many``."""

    # -- heartbeats ------------------------------------------------------------------

    async def test_beat_records_the_clock_now(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """``beat`` stores the backend clock's now for the instance; ``heartbeats`` lists
        every instance with its last beat, as aware UTC datetimes.

        If this fails, check that beat() writes ``self.clock.now()`` (not the server's
        time or a TTL) to the microsecond and that heartbeats() returns every instance.
        """
        assert await backend.heartbeats() == {}
        first = clock.advance(0.123456)
        await backend.beat("instance-a")
        second = clock.advance(7)
        await backend.beat("instance-b")
        beats = await backend.heartbeats()
        assert beats == {"instance-a": first, "instance-b": second}
        for stamp in beats.values():
            assert stamp.utcoffset() == timedelta(0), "heartbeats are aware UTC datetimes"

    async def test_beat_overwrites_the_last_heartbeat(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """A second ``beat`` of one instance replaces its heartbeat; there is one per
        instance.

        If this fails, check that beat() is an upsert keyed by the instance id.
        """
        await backend.beat("a")
        await backend.beat("b")
        later = clock.advance(30)
        await backend.beat("a")
        await backend.beat("a")
        assert await backend.heartbeats() == {"a": later, "b": later - seconds(30)}

    async def test_forget_instance(self, backend: TaskBackend, clock: ManualClock) -> None:
        """``forget_instance`` deletes one heartbeat; an unknown instance is a no-op; a
        forgotten instance that beats again is back.

        If this fails, check that forget_instance() deletes by instance id only and does
        not raise when there is nothing to delete.
        """
        await backend.beat("a")
        await backend.beat("b")
        await backend.forget_instance("a")
        assert await backend.heartbeats() == {"b": clock.now()}
        await backend.forget_instance("a")
        await backend.forget_instance("never-seen")
        assert await backend.heartbeats() == {"b": clock.now()}
        again = clock.advance(5)
        await backend.beat("a")
        assert await backend.heartbeats() == {"a": again, "b": again - seconds(5)}

    async def test_heartbeats_do_not_touch_tasks(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Beating and forgetting an instance changes none of the tasks it owns.

        If this fails, check that beat() and forget_instance() write only the
        heartbeat (recovery, not the backend, decides what happens to the tasks).
        """
        task = await create_task(backend, clock, owner="a")
        await backend.beat("a")
        clock.advance(60)
        await backend.forget_instance("a")
        assert await backend.get(task.task_id) == task
        assert await backend.owners() == {"a"}

    # -- ownership -------------------------------------------------------------------

    async def test_owners_are_those_of_active_tasks(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """``owners`` is the set of owners of PENDING and RUNNING tasks; owners of
        finished tasks and tasks without an owner are left out. It follows every way a
        record's owner or status changes: create, transition (with and without a new
        owner), update.

        If this fails, check ``SELECT DISTINCT owner ... WHERE status IN ('pending',
        'running') AND owner IS NOT NULL``, that create() stores ``record.owner`` as
        given, and, if you keep a separate owner index (a Redis set per owner), that
        every write of ``owner`` or ``status`` maintains it.
        """
        assert await backend.owners() == set()
        pending_a = await create_task(backend, clock, owner="a")
        running_a = await create_task(backend, clock, owner="a", status=RUNNING)
        running_b = await create_task(backend, clock, owner="b", status=RUNNING)
        await create_task(backend, clock)  # no owner
        for status in (SUCCESS, FAILED, CANCELLED, TaskStatus.INTERRUPTED, TaskStatus.REJECTED):
            await create_task(backend, clock, owner=f"gone-{status.value}", status=status)
        assert await backend.owners() == {"a", "b"}
        await backend.transition(running_b.task_id, expected=[RUNNING], new=SUCCESS)
        assert await backend.owners() == {"a"}
        await backend.update(pending_a.task_id, TaskUpdate(owner="c"))
        assert await backend.owners() == {"a", "c"}
        await backend.transition(
            running_a.task_id, expected=[RUNNING], new=PENDING, update=TaskUpdate(owner=None)
        )
        assert await backend.owners() == {"c"}
        await backend.transition(
            pending_a.task_id, expected=[PENDING], new=RUNNING, update=TaskUpdate(owner="d")
        )
        assert await backend.owners() == {"d"}
        assert await backend.owned("c") == [] and await backend.owned("a") == []
        await backend.transition(running_b.task_id, expected=[RUNNING], new=PENDING)
        assert await backend.owners() == {"d"}, "a finished task's status did not change"

    async def test_owned_lists_active_tasks_oldest_first(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """``owned`` returns the ids of the owner's PENDING and RUNNING tasks, oldest
        ``created_at`` first, up to ``limit``; other owners' and finished tasks are left
        out.

        If this fails, check the filter ``owner = ? AND status IN ('pending',
        'running')``, the ``ORDER BY created_at`` and the ``LIMIT``.
        """
        start = clock.now()
        offsets = [30, 10, 50, 20, 40]  # creation order differs from created_at order
        mine = []
        for offset in offsets:
            status = RUNNING if offset in (10, 40) else PENDING
            mine.append(
                await create_task(
                    backend, clock, owner="me", status=status, created_at=start + seconds(offset)
                )
            )
        await backend.append_logs(mine[0].task_id, [LogEntry(timestamp=start, message="hi")])
        await create_task(backend, clock, owner="me", status=SUCCESS, created_at=start)
        await create_task(backend, clock, owner="me", status=FAILED, created_at=start)
        await create_task(backend, clock, owner="other", created_at=start)
        await create_task(backend, clock, created_at=start)
        expected = [r.task_id for r in sorted(mine, key=lambda record: record.created_at)]
        assert await backend.owned("me") == expected
        assert await backend.owned("me", limit=2) == expected[:2]
        assert await backend.owned("nobody") == []
        done = await backend.transition(expected[0], expected=[RUNNING], new=SUCCESS)
        assert done is not None
        assert await backend.owned("me") == expected[1:]

    async def test_adopt_moves_an_active_task(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """``adopt`` sets the new owner of a PENDING or RUNNING task held by ``owner`` and
        returns the record; status and ``updated_at`` stay as they were.

        If this fails, check that adopt() is ``UPDATE ... SET owner = new WHERE task_id
        = ? AND owner = old AND status IN ('pending', 'running')`` and does not stamp
        ``updated_at``; the returned record carries no logs.
        """
        pending = await create_task(backend, clock, owner="dead")
        running = await create_task(backend, clock, owner="dead", status=RUNNING, attempt=1)
        await backend.append_logs(running.task_id, [LogEntry(timestamp=clock.now(), message="x")])
        clock.advance(90)
        for task in (pending, running):
            adopted = await backend.adopt(task.task_id, owner="dead", new_owner="me")
            assert adopted == task.model_copy(update={"owner": "me"})
            assert adopted is not None and adopted.logs == []
        stored = await backend.get(running.task_id)
        assert stored is not None and stored.owner == "me" and len(stored.logs) == 1
        assert stored.updated_at == running.updated_at
        assert await backend.owners() == {"me"}
        assert await backend.owned("dead") == []
        assert set(await backend.owned("me")) == {pending.task_id, running.task_id}

    async def test_adopt_to_none_releases_a_task(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """``adopt(new_owner=None)`` releases an active task (a queue holds it now): it
        counts for no owner until a claim or another adopt gives it one.

        If this fails, check that adopt() writes NULL (and drops the task from any index
        of owned tasks) when ``new_owner`` is None.
        """
        task = await create_task(backend, clock, owner="me")
        released = await backend.adopt(task.task_id, owner="me", new_owner=None)
        assert released is not None and released.owner is None
        assert await backend.owners() == set()
        assert await backend.owned("me") == []
        stored = await backend.get(task.task_id)
        assert stored is not None and stored.owner is None and stored.status is PENDING
        await backend.enqueue(task.task_id, queue="q")
        await backend.claim(queue="q", owner="w")
        assert await backend.owned("w") == [task.task_id]

    async def test_adopt_refuses_and_writes_nothing(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """``adopt`` returns None and changes nothing when the owner is not ``owner``,
        the task is finished, or it does not exist.

        If this fails, check that adopt() compares the owner and the status in the same
        conditional write, and does not upsert.
        """
        theirs = await create_task(backend, clock, owner="alive")
        unowned = await create_task(backend, clock)
        finished = await create_task(backend, clock, owner="dead", status=SUCCESS)
        cancelled = await create_task(backend, clock, owner="dead", status=CANCELLED)
        assert await backend.adopt(theirs.task_id, owner="dead", new_owner="me") is None
        assert await backend.adopt(unowned.task_id, owner="dead", new_owner="me") is None
        assert await backend.adopt(finished.task_id, owner="dead", new_owner="me") is None
        assert await backend.adopt(cancelled.task_id, owner="dead", new_owner="me") is None
        missing = new_id()
        assert await backend.adopt(missing, owner="dead", new_owner="me") is None
        for task in (theirs, unowned, finished, cancelled):
            assert await backend.get(task.task_id) == task
        assert await backend.get(missing) is None
        assert await backend.owners() == {"alive"}

    async def test_adopt_twice_only_first_wins(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Once adopted, a task is no longer the dead owner's: a second adopter with the
        same ``owner`` is refused.

        If this fails, check that adopt() compares the owner it is given, not only the
        status.
        """
        task = await create_task(backend, clock, owner="dead", status=RUNNING)
        assert await backend.adopt(task.task_id, owner="dead", new_owner="first") is not None
        assert await backend.adopt(task.task_id, owner="dead", new_owner="second") is None
        stored = await backend.get(task.task_id)
        assert stored is not None and stored.owner == "first"

    async def test_racing_adopters_one_winner(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Many instances adopting the same dead owner's tasks at once: each task gets
        exactly one new owner, the winner's.

        Ten tasks, every contender (coroutines here and forks on other threads) trying
        each. If this fails, check that adopt() is one conditional write (``UPDATE ...
        WHERE owner = old``, a script), not read-then-write.
        """
        tasks = [
            await create_task(backend, clock, owner="dead", status=RUNNING if i % 2 else PENDING)
            for i in range(10)
        ]

        async def work(target: TaskBackend, index: int) -> list[TaskRecord | None]:
            return [
                await target.adopt(task.task_id, owner="dead", new_owner=f"o{index}")
                for task in tasks
            ]

        results = await self.race(backend, work)
        for position, task in enumerate(tasks):
            won = [
                (index, attempts[position])
                for index, attempts in enumerate(results)
                if attempts[position] is not None
            ]
            assert len(won) == 1, f"{len(won)} instances adopted one task"
            index, record = won[0]
            assert record is not None and record.owner == f"o{index}"
            stored = await backend.get(task.task_id)
            assert stored == task.model_copy(update={"owner": f"o{index}"})
        assert await backend.owned("dead") == []

    # -- claim hands the record over -------------------------------------------------

    async def test_claim_gives_the_record_to_the_claimer(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Claiming a PENDING task makes the claimer its owner, in the same step; the
        status stays and unclaimed tasks keep their owner.

        If this fails, check that claim() writes ``owner`` on the task's record
        atomically with taking it off the queue (one transaction, one script).
        """
        pending, later = await stored_ids(backend, clock, 2)
        await backend.update(pending, TaskUpdate(owner="old"))
        await backend.update(later, TaskUpdate(owner="old"))
        await backend.enqueue(pending, queue=Q, priority=2)
        await backend.enqueue(later, queue=Q, not_before=clock.now() + seconds(60))
        claims = await backend.claim(queue=Q, owner="w1", limit=10)
        assert [c.task_id for c in claims] == [pending]
        stored = await backend.get(pending)
        assert stored is not None
        assert (stored.status, stored.owner) == (PENDING, "w1")
        untouched = await backend.get(later)
        assert untouched is not None and untouched.owner == "old"
        assert await backend.owners() == {"w1", "old"}
        assert await backend.owned("w1") == [pending]

    async def test_claim_leaves_a_running_record_to_its_runner(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """A RUNNING task found on a queue (an enqueue retried after its reply was lost,
        while another instance claimed and started the task) is taken off the queue, but
        its record keeps its owner: the instance running it, whose death recovery must
        still notice. The claimer does not run it (only a PENDING task starts).

        If this fails, check that claim() sets the owner only where the record is
        PENDING (SQL: ``AND status = 'pending'`` in the claim's UPDATE).
        """
        (running,) = await stored_ids(backend, clock, 1)
        await backend.transition(
            running, expected=[PENDING], new=RUNNING, update=TaskUpdate(owner="runner")
        )
        await backend.enqueue(running, queue=Q)
        claims = await backend.claim(queue=Q, owner="w1", limit=10)
        assert [c.task_id for c in claims] == [running]
        stored = await backend.get(running)
        assert stored is not None
        assert (stored.status, stored.owner) == (RUNNING, "runner")
        assert await backend.owned("w1") == []
        assert await backend.owned("runner") == [running]
        assert await backend.owners() == {"runner"}

    async def test_claim_leaves_finished_and_missing_records_alone(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """A queued task whose record is finished, or missing, is still claimed, but no
        record is written: the finished one keeps its owner, the missing one stays
        missing.

        If this fails, check that claim() sets the owner only where the record exists
        and its status is PENDING or RUNNING (no upsert, no write to finished tasks).
        """
        done = await create_task(backend, clock, queue=Q, owner="old", status=SUCCESS)
        cancelled = await create_task(backend, clock, queue=Q, status=CANCELLED)
        missing = new_id()
        for task_id in (done.task_id, cancelled.task_id, missing):
            await backend.enqueue(task_id, queue=Q)
        clock.advance(1)
        claims = await backend.claim(queue=Q, owner="w1", limit=10)
        assert [c.task_id for c in claims] == [done.task_id, cancelled.task_id, missing]
        assert await backend.get(done.task_id) == done
        assert await backend.get(cancelled.task_id) == cancelled
        assert await backend.get(missing) is None
        assert await backend.owners() == set()

    # -- transition_many (group commit) ----------------------------------------------

    async def test_transition_many_mixes_successes_and_refusals(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """One ``transition_many`` call with items that succeed and items that are
        refused: one result per item, in order; refused items write nothing.

        If this fails, check that each item is its own compare-and-set (a refused item
        must not abort or roll back the others), that results follow the input order,
        that successes apply their update and stamp ``updated_at``, and that returned
        records carry no logs.
        """
        start_ = await create_task(backend, clock, tags={"k": "v"})
        finish = await create_task(backend, clock, status=RUNNING, owner="me")
        wrong = await create_task(backend, clock)
        ended = await create_task(backend, clock, status=SUCCESS)
        key = new_id("key-")
        fail = await create_task(backend, clock, status=RUNNING, idempotency_key=key)
        await backend.append_logs(start_.task_id, [LogEntry(timestamp=clock.now(), message="a")])
        missing = new_id()
        now = clock.advance(2)
        batch = [
            _step(start_.task_id, {PENDING}, RUNNING, TaskUpdate(started_at=now, owner="me")),
            _step(wrong.task_id, {RUNNING}, SUCCESS, TaskUpdate(owner="intruder")),
            _step(finish.task_id, {RUNNING}, SUCCESS, TaskUpdate(result={"n": 1}, owner=None)),
            _step(missing, {PENDING}, RUNNING),
            _step(ended.task_id, {PENDING, RUNNING}, FAILED, TaskUpdate(error="late")),
            _step(fail.task_id, {RUNNING}, FAILED, TaskUpdate(error="boom", finished_at=now)),
        ]
        results = read_back(await backend.transition_many(batch))
        assert [None if r is None else r.task_id for r in results] == [
            start_.task_id,
            None,
            finish.task_id,
            None,
            None,
            fail.task_id,
        ]
        started, _, finished, _, _, failed = results
        assert started is not None and finished is not None and failed is not None
        assert started == start_.model_copy(
            update={"status": RUNNING, "started_at": now, "owner": "me", "updated_at": now}
        )
        assert finished == finish.model_copy(
            update={"status": SUCCESS, "result": {"n": 1}, "owner": None, "updated_at": now}
        )
        assert (failed.status, failed.error, failed.finished_at) == (FAILED, "boom", now)
        stored = await backend.get(start_.task_id)
        assert stored is not None and len(stored.logs) == 1, "logs survive transition_many"
        assert stored.model_copy(update={"logs": []}) == started
        assert await backend.get(finish.task_id) == finished
        assert await backend.get(wrong.task_id) == wrong
        assert await backend.get(ended.task_id) == ended
        assert await backend.get(missing) is None
        assert await backend.find_by_key(key) is None, "a FAILED task releases its key"

    async def test_transition_many_matches_transition(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Each item of ``transition_many`` has exactly the outcome ``transition`` gives.

        Twin tasks walk the same steps, one twin through ``transition`` one at a time,
        the other through ``transition_many`` one batch per step; their results and
        stored records must match. If this fails, compare your batched statement or
        script with the single one: the same status check, the same fields written, the
        same ``updated_at``, the same key release.
        """
        plans = _plans()
        singles, batched = [], []
        for number in range(len(plans)):
            fields = {"owner": "creator", "tags": {"n": str(number)}, "progress": 0.5}
            singles.append(await create_task(backend, clock, idempotency_key=new_id(), **fields))
            batched.append(await create_task(backend, clock, idempotency_key=new_id(), **fields))
        for step in range(max(len(plan) for plan in plans)):
            clock.advance(1)
            todo = [(n, plan[step]) for n, plan in enumerate(plans) if step < len(plan)]
            one_by_one = [
                await backend.transition(
                    singles[n].task_id, expected=expected, new=new, update=update
                )
                for n, (expected, new, update) in todo
            ]
            together = read_back(
                await backend.transition_many(
                    [
                        _step(batched[n].task_id, expected, new, update)
                        for n, (expected, new, update) in todo
                    ]
                )
            )
            assert [_without_id(r) for r in together] == [_without_id(r) for r in one_by_one], (
                f"step {step}: transition_many and transition disagree"
            )
        for single, twin in zip(singles, batched, strict=True):
            assert _without_id(await backend.get(twin.task_id)) == _without_id(
                await backend.get(single.task_id)
            )
            assert single.idempotency_key is not None and twin.idempotency_key is not None
            assert (await backend.find_by_key(single.idempotency_key) is None) == (
                await backend.find_by_key(twin.idempotency_key) is None
            )
        assert await backend.owned("w") == []

    async def test_transition_many_without_read_back(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """An item sent with ``read_back=False`` changes the task exactly as with
        ``read_back=True``; its answer is None when not applied, else ``APPLIED`` (or
        the record, which a store may still return).

        Twin tasks walk the same steps, one twin's items asking for the record and the
        other's not. If this fails, check that the quiet path writes the same fields,
        status, counters and key release as the other, and answers None for an item
        that was not applied.
        """
        plans = _plans()
        loud, quiet = [], []
        for number in range(len(plans)):
            fields = {"owner": "creator", "tags": {"n": str(number)}, "progress": 0.5}
            loud.append(await create_task(backend, clock, idempotency_key=new_id(), **fields))
            quiet.append(await create_task(backend, clock, idempotency_key=new_id(), **fields))
        for step in range(max(len(plan) for plan in plans)):
            clock.advance(1)
            todo = [(n, plan[step]) for n, plan in enumerate(plans) if step < len(plan)]
            items = [
                replace(_step(twins[n].task_id, expected, new, update), read_back=twins is loud)
                for twins in (loud, quiet)
                for n, (expected, new, update) in todo
            ]
            results = await backend.transition_many(items)
            answers = read_back(results[: len(todo)])
            for number, (with_record, without) in enumerate(
                zip(answers, results[len(todo) :], strict=True)
            ):
                where = f"step {step}, task {todo[number][0]}"
                if with_record is None:
                    assert without is None, f"{where}: a change not applied was answered"
                elif not isinstance(without, Applied):
                    assert _without_id(without) == _without_id(with_record), where
        for with_record, without in zip(loud, quiet, strict=True):
            assert _without_id(await backend.get(without.task_id)) == _without_id(
                await backend.get(with_record.task_id)
            )
            assert with_record.idempotency_key is not None
            assert without.idempotency_key is not None
            assert (await backend.find_by_key(with_record.idempotency_key) is None) == (
                await backend.find_by_key(without.idempotency_key) is None
            )
        assert await backend.owned("w") == []

    async def test_transition_many_empty(self, backend: TaskBackend) -> None:
        """``transition_many([])`` returns an empty list.

        If this fails, check that an empty batch sends no statement (an empty ``IN ()``
        or an empty script argument list is an error on some servers).
        """
        assert await backend.transition_many([]) == []

    async def test_transition_many_large_batch(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """A few hundred transitions in one call all land, with the right counts after.

        Half start (PENDING -> RUNNING), half are refused; then one call finishes the
        started ones and cancels the others. If this fails, check parameter limits of
        your batched statement (placeholders per statement, script argument counts)
        and that status counts (``stats``) follow batched writes.
        """
        ids = await stored_ids(backend, clock, BIG_BATCH)
        now = clock.advance(1)
        first = read_back(
            await backend.transition_many(
                [
                    _step(task_id, {PENDING}, RUNNING, TaskUpdate(started_at=now, owner="me"))
                    if n % 2 == 0
                    else _step(task_id, {RUNNING}, SUCCESS)
                    for n, task_id in enumerate(ids)
                ]
            )
        )
        assert len(first) == BIG_BATCH
        for n, (task_id, record) in enumerate(zip(ids, first, strict=True)):
            if n % 2 == 0:
                assert record is not None and record.task_id == task_id
                assert (record.status, record.owner, record.started_at) == (RUNNING, "me", now)
            else:
                assert record is None, f"item {n} should have been refused"
        assert len(await backend.owned("me", limit=BIG_BATCH)) == BIG_BATCH // 2
        later = clock.advance(1)
        second = read_back(
            await backend.transition_many(
                [
                    _step(task_id, {RUNNING}, SUCCESS, TaskUpdate(finished_at=later, result=n))
                    if n % 2 == 0
                    else _step(task_id, {PENDING}, CANCELLED, TaskUpdate(finished_at=later))
                    for n, task_id in enumerate(ids)
                ]
            )
        )
        assert all(record is not None for record in second)
        assert [record.result for record in second if record is not None] == [
            n if n % 2 == 0 else None for n in range(BIG_BATCH)
        ]
        stats = await backend.stats()
        assert stats.total == BIG_BATCH
        assert stats.by_status == {SUCCESS: BIG_BATCH // 2, CANCELLED: BIG_BATCH // 2}
        assert await backend.owners() == set()
        sample = await backend.get(ids[BIG_BATCH - 2])
        assert sample is not None and sample.status is SUCCESS and sample.updated_at == later

    async def test_racing_transition_many_one_winner_per_task(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Contenders each sending one ``transition_many`` over the same ten PENDING
        tasks: every task is moved to RUNNING exactly once.

        Half the batches list the tasks in the opposite order. If this fails, check
        that each item of a batch is a conditional write on the current status
        (``UPDATE ... WHERE status IN``, checked inside the script), not a status read
        before the batch is written; if it fails with a deadlock error, lock the rows
        of a batch in one order (sort the items by ``task_id``) or retry the
        transaction.
        """
        tasks = [await create_task(backend, clock) for _ in range(10)]

        async def work(target: TaskBackend, index: int) -> list[TaskRecord | None]:
            order = tasks if index % 2 else list(reversed(tasks))
            results = read_back(
                await target.transition_many(
                    [
                        _step(task.task_id, {PENDING}, RUNNING, TaskUpdate(owner=f"w{index}"))
                        for task in order
                    ]
                )
            )
            return results if index % 2 else list(reversed(results))

        results = await self.race(backend, work)
        for position, task in enumerate(tasks):
            won = [attempts[position] for attempts in results if attempts[position] is not None]
            assert len(won) == 1, f"{len(won)} batches moved one task to RUNNING"
            winner = won[0]
            stored = await backend.get(task.task_id)
            assert winner is not None and stored is not None
            assert stored.status is RUNNING and stored.owner == winner.owner
