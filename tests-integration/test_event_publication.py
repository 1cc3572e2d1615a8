"""Events reach the other instances in batches, off the tasks' path, and none is lost
at shutdown; they are published only while someone reads them.

On a shared store every lifecycle event and every ``task_log()`` line is published for
the other instances (their dashboards, ``events()`` streams, remote observers). Each
was one write of its own, awaited by the task: a task logging a line per row of an
import cost the store a write per line (200,000 lines: 65 s on SQLite, more than five
minutes on MySQL), and durable requests ran at a third of their speed on PostgreSQL.
Now the events of a turn of the event loop go in one ``publish_many`` while the task
goes on. Two instances (two ``TaskManager``s with their own connections) share a real
store here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from durable_stores import DURABLE, isolated_url

from fastapi_taskflow import (
    LifecycleEvent,
    LogEvent,
    ManagedBackgroundTasks,
    MemoryObserver,
    QueueConfig,
    TaskManager,
    TaskStatus,
    task_log,
)

pytestmark = pytest.mark.anyio
LINES = 12_000


@pytest.fixture(params=sorted(DURABLE))
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from isolated_url(request.param, tmp_path)


async def import_rows(rows: int) -> None:
    for row in range(rows):
        task_log(f"row {row} imported", row=row)


def import_rows_in_a_thread(rows: int) -> None:
    for row in range(rows):
        task_log(f"row {row} imported", row=row)


def count_publications(backend: Any) -> list[int]:
    """Count the events ``backend`` is asked to publish, one entry per write."""
    writes: list[int] = []
    publish, publish_many = backend.publish, backend.publish_many

    async def one(event: Any) -> None:
        writes.append(1)
        await publish(event)

    async def many(events: Any) -> None:
        writes.append(len(events))
        await publish_many(events)

    backend.publish, backend.publish_many = one, many
    return writes


@pytest.mark.parametrize("function", [import_rows, import_rows_in_a_thread])
async def test_a_chatty_task_is_published_in_batches_and_whole(
    durable_url: str, function: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """12,000 lines logged by a task on instance A (``async def``, or ``def`` in a
    thread) reach instance B's ``events()`` stream, every one and in order, followed by
    the task's SUCCESS, though A shut down right after the task ended; A published them
    in a few writes (at most one per 50 ms), not 12,000. Nothing is dropped on the way,
    and nothing warns: the engine's own watcher of cancellation requests, which reads
    every event, fell 10,000 behind and warned about "an events() stream" nobody had
    opened."""
    a = TaskManager(durable_url, instance_id="instance-a")
    b = TaskManager(durable_url, instance_id="instance-b")
    job = a.task()(function)
    b.task()(function)
    writes = count_publications(a.backend)
    async with b, b.events(backlog=2 * LINES) as stream:
        async with a:
            tasks = ManagedBackgroundTasks(a)
            task_id = tasks.add_task(job, LINES)
            await tasks()
        lines: list[str] = []
        with anyio.fail_after(60):
            async for event in stream:
                if event.task_id != task_id:
                    continue
                if isinstance(event, LogEvent):
                    lines.append(event.message)
                elif isinstance(event, LifecycleEvent) and event.status is TaskStatus.SUCCESS:
                    break
    assert lines == [f"row {row} imported" for row in range(LINES)]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert sum(writes) >= LINES + 1
    # One write per 50 ms at most (PUBLISH_INTERVAL): ~1 s of logging here, more on a
    # loaded machine; a write per line would be 12,000.
    assert len(writes) <= 100, f"{len(writes)} writes for {sum(writes)} events"


async def chatty(lines: int) -> None:
    for line in range(lines):
        task_log(f"line {line}")


async def _run_on(manager: TaskManager, function: Any, *args: Any) -> str:
    """Run one task on ``manager`` the request way; return its id."""
    tasks = ManagedBackgroundTasks(manager)
    task_id = tasks.add_task(function, *args)
    await tasks()
    return task_id


async def _published_by_one_task(manager: TaskManager, function: Any, writes: list[int]) -> int:
    """How many events ``manager`` published for one task it ran (its outbox sent)."""
    before = sum(writes)
    await _run_on(manager, function, 3)
    await manager._engine.hub.drain(timeout=10)
    return sum(writes) - before


async def test_events_are_published_only_while_someone_reads(durable_url: str) -> None:
    """With no reader anywhere, instance A publishes nothing for its tasks (no event is
    built: a busy instance nobody watches pays nothing for publication). Once B opens
    an ``events()`` stream, A's tasks reach it, every line and status, in order; once
    B's stream closes, A stops publishing again."""
    a = TaskManager(durable_url, instance_id="instance-a")
    b = TaskManager(durable_url, instance_id="instance-b")
    job = a.task(name="tests.publication.chatty")(chatty)
    b.task(name="tests.publication.chatty")(chatty)
    writes = count_publications(a.backend)
    async with a, b:
        assert await _published_by_one_task(a, job, writes) == 0
        async with b.events() as stream:
            with anyio.fail_after(10):  # A reads the readers twice a second
                while not await _published_by_one_task(a, job, writes):
                    pass
            task_id = await _run_on(a, job, 3)
            seen: list[tuple[str, str]] = []
            with anyio.fail_after(20):
                async for event in stream:
                    if event.task_id != task_id:
                        continue
                    if isinstance(event, LogEvent):
                        seen.append(("log", event.message))
                    else:
                        seen.append(("status", event.status.value))
                        if event.status is TaskStatus.SUCCESS:
                            break
        assert seen == [
            ("status", "running"),
            ("log", "line 0"),
            ("log", "line 1"),
            ("log", "line 2"),
            ("status", "success"),
        ]
        with anyio.fail_after(10):  # B withdrew; A sees it within a check or two
            while await _published_by_one_task(a, job, writes):
                pass
        assert await b.backend.readers() == set()


async def test_a_task_taken_over_by_another_instance_is_let_go_without_readers(
    durable_url: str,
) -> None:
    """A task A accepted but could not start (its queue full on A) is claimed and run by
    B. Nobody reads events, yet B announces that start (the one event it publishes for
    the task), and A lets go of what it held for the task; without it, A kept the
    task's function and arguments for ever."""
    gate = anyio.Event()

    async def hold() -> None:
        await gate.wait()

    async def quick(n: int) -> int:
        return n

    limits = {"narrow": QueueConfig(concurrency=1)}
    a = TaskManager(durable_url, instance_id="instance-a", queues=limits, poll_interval=0.05)
    b = TaskManager(durable_url, instance_id="instance-b", queues=limits, poll_interval=0.05)
    a_hold = a.task(name="tests.publication.hold", queue="narrow")(hold)
    a_quick = a.task(name="tests.publication.quick", queue="narrow")(quick)
    b.task(name="tests.publication.quick", queue="narrow")(quick)
    writes = count_publications(b.backend)
    async with a:
        blocker = a.add_task(a_hold)
        with anyio.fail_after(10):
            while (record := await a.store.aget(blocker)) is None or (
                record.status is not TaskStatus.RUNNING
            ):
                await anyio.sleep(0.02)
        task_id = a.add_task(a_quick, 7)
        await a._engine.flush()
        assert task_id in a._engine.tasks
        async with b:
            with anyio.fail_after(10):
                while (record := await b.store.aget(task_id)) is None or (
                    record.status is not TaskStatus.SUCCESS
                ):
                    await anyio.sleep(0.02)
            assert record.owner != "instance-a"  # A's queue is held: B ran it
            with anyio.fail_after(10):
                while task_id in a._engine.tasks:
                    await anyio.sleep(0.02)
            await b._engine.hub.drain(timeout=10)
            assert sum(writes) == 1  # RUNNING, a signal; no SUCCESS: nobody reads
        gate.set()


async def test_a_remote_events_observer_is_a_reader(durable_url: str) -> None:
    """An observer with ``remote_events=True`` on instance B makes B a reader: A's tasks
    reach it (and nothing of A's is published once B is gone)."""
    remote = MemoryObserver(remote_events=True)
    a = TaskManager(durable_url, instance_id="instance-a")
    b = TaskManager(durable_url, instance_id="instance-b", observers=[remote])
    job = a.task(name="tests.publication.chatty")(chatty)
    b.task(name="tests.publication.chatty")(chatty)
    writes = count_publications(a.backend)
    async with a:
        async with b:
            with anyio.fail_after(10):  # A reads the readers twice a second
                while not remote.events:
                    await _run_on(a, job, 1)
                    await anyio.sleep(0.05)
            task_id = await _run_on(a, job, 2)
            with anyio.fail_after(10):
                while not any(
                    isinstance(e, LifecycleEvent) and e.status is TaskStatus.SUCCESS
                    for e in remote.for_task(task_id)
                ):
                    await anyio.sleep(0.02)
            kinds = [
                e.message if isinstance(e, LogEvent) else e.status.value
                for e in remote.for_task(task_id)
            ]
            assert kinds == ["running", "line 0", "line 1", "success"]
            assert {e.instance_id for e in remote.events} == {"instance-a"}
        with anyio.fail_after(10):  # B withdrew as it shut down
            while await _published_by_one_task(a, job, writes):
                pass
