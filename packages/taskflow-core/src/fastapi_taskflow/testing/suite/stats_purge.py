"""Aggregate stats and purging old finished tasks."""

from __future__ import annotations

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.models import LogEntry, TaskQuery, TaskStats, TaskStatus, TaskUpdate
from fastapi_taskflow.protocols import TaskBackend

from ._base import ConformanceBase, create_task, make_record, new_id, seconds

__all__ = ["PurgeTests", "StatsTests"]

PENDING, RUNNING, SUCCESS, FAILED, CANCELLED, INTERRUPTED = (
    TaskStatus.PENDING,
    TaskStatus.RUNNING,
    TaskStatus.SUCCESS,
    TaskStatus.FAILED,
    TaskStatus.CANCELLED,
    TaskStatus.INTERRUPTED,
)


def counts(stats: TaskStats) -> tuple[int, dict[TaskStatus, int], dict[str, dict[TaskStatus, int]]]:
    """The stats with zero counts dropped (whether a store lists zeros is its choice)."""
    by_status = {s: n for s, n in stats.by_status.items() if n}
    by_func = {func: {s: n for s, n in per.items() if n} for func, per in stats.by_func.items()}
    return stats.total, by_status, {func: per for func, per in by_func.items() if per}


class StatsTests(ConformanceBase):
    """``stats``: counts by status and by function name."""

    async def test_stats_empty(self, backend: TaskBackend) -> None:
        """An empty store counts nothing.

        If this fails, check that stats() of an empty store returns ``total=0``.
        """
        assert counts(await backend.stats()) == (0, {}, {})

    async def test_stats_by_status_and_func(self, backend: TaskBackend, clock: ManualClock) -> None:
        """Counts follow creates and transitions, per status and per function.

        If this fails, check that stats() groups by ``status`` and by
        ``(func_name, status)``, and that counters (if you keep them) move on every
        transition.
        """
        a1 = await create_task(backend, clock, func_name="app.a")
        a2 = await create_task(backend, clock, func_name="app.a")
        await create_task(backend, clock, func_name="app.a", status=SUCCESS)
        b1 = await create_task(backend, clock, func_name="app.b")
        assert counts(await backend.stats()) == (
            4,
            {PENDING: 3, SUCCESS: 1},
            {"app.a": {PENDING: 2, SUCCESS: 1}, "app.b": {PENDING: 1}},
        )
        await backend.transition(a1.task_id, expected=[PENDING], new=RUNNING)
        await backend.transition(a2.task_id, expected=[PENDING], new=FAILED)
        await backend.transition(b1.task_id, expected=[PENDING], new=RUNNING)
        await backend.transition(b1.task_id, expected=[RUNNING], new=SUCCESS)
        await backend.transition(b1.task_id, expected=[RUNNING], new=FAILED)  # refused
        await backend.update(a1.task_id, TaskUpdate(progress=0.5))
        assert counts(await backend.stats()) == (
            4,
            {RUNNING: 1, FAILED: 1, SUCCESS: 2},
            {"app.a": {RUNNING: 1, FAILED: 1, SUCCESS: 1}, "app.b": {SUCCESS: 1}},
        )


class PurgeTests(ConformanceBase):
    """``purge``: deleting terminal tasks that finished before a cutoff."""

    async def test_purge_only_old_terminal_tasks(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Only terminal tasks finished before the cutoff go; active ones always stay.

        A PENDING task waiting for a retry keeps the ``finished_at`` of its last attempt
        and must not be purged. If this fails, check the WHERE clause:
        ``status IN (terminal) AND finished_at < cutoff``.
        """
        now = clock.now()
        old, recent = now - seconds(3600), now - seconds(10)
        doomed = [
            await create_task(backend, clock, status=status, finished_at=old)
            for status in (SUCCESS, FAILED, CANCELLED, INTERRUPTED, TaskStatus.REJECTED)
        ]
        kept = [
            await create_task(backend, clock, status=SUCCESS, finished_at=recent),
            await create_task(backend, clock, status=PENDING, finished_at=old),
            await create_task(backend, clock, status=RUNNING, finished_at=old),
            await create_task(backend, clock, status=PENDING),
        ]
        assert await backend.purge(finished_before=now - seconds(60)) == len(doomed)
        for record in doomed:
            assert await backend.get(record.task_id) is None
        for record in kept:
            assert await backend.get(record.task_id) is not None
        assert await backend.purge(finished_before=now - seconds(60)) == 0
        page = await backend.query(TaskQuery())
        assert sorted(r.task_id for r in page.items) == sorted(r.task_id for r in kept)
        assert counts(await backend.stats())[0] == len(kept)

    async def test_purge_in_batches(self, backend: TaskBackend, clock: ManualClock) -> None:
        """Each call deletes at most ``batch_size``; calling again finishes the job.

        If this fails, check that purge() applies ``LIMIT batch_size`` and returns the
        number of tasks it deleted.
        """
        finished = clock.now() - seconds(100)
        for _ in range(7):
            await create_task(backend, clock, status=SUCCESS, finished_at=finished)
        cutoff = clock.now()
        assert [await backend.purge(finished_before=cutoff, batch_size=3) for _ in range(4)] == [
            3,
            3,
            1,
            0,
        ]
        assert counts(await backend.stats()) == (0, {}, {})

    async def test_purge_deletes_logs(self, backend: TaskBackend, clock: ManualClock) -> None:
        """A purged task's logs are gone: a new task with its id starts with none.

        If this fails, check that purge() deletes the task's log rows too.
        """
        task = await create_task(backend, clock, status=SUCCESS, finished_at=clock.now())
        await backend.append_logs(task.task_id, [LogEntry(timestamp=clock.now(), message="old")])
        clock.advance(10)
        assert await backend.purge(finished_before=clock.now()) == 1
        assert await backend.get(task.task_id) is None
        assert (await backend.create(make_record(clock, task_id=task.task_id))).created
        reborn = await backend.get(task.task_id)
        assert reborn is not None and reborn.logs == []

    async def test_purge_frees_idempotency_key(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """A purged SUCCESS task no longer holds its idempotency key.

        If this fails, check that purge() removes the task's key entry too.
        """
        key = new_id("key-")
        await create_task(
            backend, clock, status=SUCCESS, idempotency_key=key, finished_at=clock.now()
        )
        clock.advance(10)
        assert await backend.purge(finished_before=clock.now()) == 1
        assert await backend.find_by_key(key) is None
        assert (await backend.create(make_record(clock, idempotency_key=key))).created

    async def test_purge_empty_store(self, backend: TaskBackend, clock: ManualClock) -> None:
        """Purging an empty store returns 0.

        If this fails, check that purge() handles nothing to delete.
        """
        assert await backend.purge(finished_before=clock.now()) == 0
