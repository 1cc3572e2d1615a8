"""Task logs: appended in order, returned by ``get``, never orphaned."""

from __future__ import annotations

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.models import LogEntry
from fastapi_taskflow.protocols import TaskBackend

from ._base import ConformanceBase, create_task, make_record, new_id, seconds

__all__ = ["LogTests"]


class LogTests(ConformanceBase):
    """``append_logs`` and the logs ``get`` returns."""

    async def test_logs_round_trip_in_order(self, backend: TaskBackend, clock: ManualClock) -> None:
        """Entries from several calls come back from ``get`` in the order appended.

        If this fails, check that logs are stored with a sequence number (not ordered by
        timestamp) and that every LogEntry field (``extra`` JSON, ``attempt``, ``level``,
        microsecond timestamps) round-trips.
        """
        task = await create_task(backend, clock)
        now = clock.now()
        first = [
            LogEntry(timestamp=now + seconds(2), level="info", message="b: later stamp first"),
            LogEntry(timestamp=now + seconds(1), level="warning", message="a", attempt=1),
            LogEntry(
                timestamp=now + seconds(1), message="same stamp", extra={"k": [1, {"x": None}]}
            ),
        ]
        second = [
            LogEntry(timestamp=now.replace(microsecond=999999), level="error", message="ünïcode ✓"),
        ]
        await backend.append_logs(task.task_id, first)
        await backend.append_logs(task.task_id, second)
        stored = await backend.get(task.task_id)
        assert stored is not None
        assert stored.logs == first + second

    async def test_many_logs_keep_order(self, backend: TaskBackend, clock: ManualClock) -> None:
        """A hundred entries with one timestamp, in batches, keep their order.

        If this fails, check that order is by insertion, even within one batch.
        """
        task = await create_task(backend, clock)
        entries = [LogEntry(timestamp=clock.now(), message=f"line {i}") for i in range(100)]
        for start in range(0, 100, 30):
            await backend.append_logs(task.task_id, entries[start : start + 30])
        stored = await backend.get(task.task_id)
        assert stored is not None
        assert [e.message for e in stored.logs] == [e.message for e in entries]

    async def test_one_call_appends_tens_of_thousands_of_lines(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """20,000 entries in one ``append_logs`` (a task that logged a line per row of
        an import: the engine stores an attempt's lines in one call) are all stored, in
        order.

        If this fails, check for a limit on how many values one statement or script
        takes (Lua's ``unpack()`` fails past ~8,000: append in chunks).
        """
        task = await create_task(backend, clock)
        entries = [LogEntry(timestamp=clock.now(), message=f"row {i}") for i in range(20_000)]
        await backend.append_logs(task.task_id, entries)
        stored = await backend.get(task.task_id)
        assert stored is not None
        assert [e.message for e in stored.logs] == [e.message for e in entries]

    async def test_logs_belong_to_their_task(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Each task's ``get`` returns only its own logs; a task without logs has none.

        If this fails, check that logs are keyed by task id.
        """
        a = await create_task(backend, clock)
        b = await create_task(backend, clock)
        quiet = await create_task(backend, clock)
        await backend.append_logs(a.task_id, [LogEntry(timestamp=clock.now(), message="a")])
        await backend.append_logs(b.task_id, [LogEntry(timestamp=clock.now(), message="b")])
        got_a, got_b, got_quiet = (
            await backend.get(a.task_id),
            await backend.get(b.task_id),
            await backend.get(quiet.task_id),
        )
        assert got_a is not None and [e.message for e in got_a.logs] == ["a"]
        assert got_b is not None and [e.message for e in got_b.logs] == ["b"]
        assert got_quiet is not None and got_quiet.logs == []

    async def test_append_logs_unknown_task_is_noop(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Appending to an unknown task does nothing: no error, no orphan lines.

        A task created later with that id starts with no logs. If this fails, check that
        append_logs() checks the task exists (or that a foreign key drops the rows).
        """
        task_id = new_id()
        await backend.append_logs(task_id, [LogEntry(timestamp=clock.now(), message="orphan")])
        assert await backend.get(task_id) is None
        await backend.create(make_record(clock, task_id=task_id))
        stored = await backend.get(task_id)
        assert stored is not None and stored.logs == []

    async def test_append_no_entries(self, backend: TaskBackend, clock: ManualClock) -> None:
        """``append_logs(task_id, [])`` is accepted and adds nothing.

        If this fails, check that an empty batch does not build an empty INSERT.
        """
        task = await create_task(backend, clock)
        await backend.append_logs(task.task_id, [])
        stored = await backend.get(task.task_id)
        assert stored is not None and stored.logs == []
