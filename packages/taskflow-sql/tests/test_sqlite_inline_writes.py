"""SQLite: small writes run on the event loop's thread, and never make it wait.

A transaction of a few rows (a task's start, its outcome and the next task's start)
commits on the loop's thread, without the hop to the writer thread and back. That must
never cost the application its event loop: when another process holds SQLite's write
lock the write goes to the writer thread, which waits for the lock while the loop
serves everything else; and the WAL, which the loop's thread never checkpoints, is
still checkpointed by the writer thread so that it stays bounded.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager, TaskStatus

pytestmark = pytest.mark.anyio


def _manager(path: Path) -> tuple[TaskManager, Any]:
    """A manager on the SQLite file ``path`` and a task returning its argument."""
    tm = TaskManager(backend=f"sqlite:///{path}", publish_events=False)

    @tm.task()
    async def job(i: int) -> int:
        return i

    return tm, job


async def test_the_loop_keeps_running_while_another_process_holds_the_write_lock(
    tmp_path: Path,
) -> None:
    """Another connection (as another process would) holds the write lock: the task's
    start waits for it on the writer thread while the event loop keeps serving; once
    the lock is released the task runs and ends SUCCESS."""
    path = tmp_path / "tasks.db"
    tm, job = _manager(path)
    async with tm:
        warm = ManagedBackgroundTasks(tm)
        warm.add_task(job, 0)
        await warm()  # the schema exists and the writer's connection is open
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            holder.execute("BEGIN IMMEDIATE")
            container = ManagedBackgroundTasks(tm)
            task_id = container.add_task(job, 1)
            running = asyncio.ensure_future(container())
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            ticks = 0
            while ticks < 20:  # the loop turns while the write waits for the lock
                await asyncio.sleep(0.01)
                ticks += 1
                assert loop.time() < deadline, "the event loop was blocked by the lock"
            assert not running.done(), "the task ran without the write lock"
            holder.execute("COMMIT")
        finally:
            holder.close()
        await asyncio.wait_for(running, timeout=10)
        record = await tm.store.aget(task_id)
    assert record is not None and record.status is TaskStatus.SUCCESS and record.result == 1


async def test_the_wal_stays_bounded_under_many_small_writes(tmp_path: Path) -> None:
    """2,000 tasks run one after another (about 2,000 small commits on the loop's
    thread): the writer thread's checkpoints keep the WAL file to a few megabytes
    (without them it grows by every commit: ~75 MB here)."""
    path = tmp_path / "tasks.db"
    tm, job = _manager(path)
    async with tm:
        container = ManagedBackgroundTasks(tm)
        for i in range(2000):
            container.add_task(job, i)
        await container()
        wal = await asyncio.to_thread(os.path.getsize, f"{path}-wal")
        stats = await tm.store.astats()
    assert stats.by_status.get(TaskStatus.SUCCESS) == 2000
    assert wal < 16 * 1024 * 1024, f"the WAL grew to {wal / 1e6:.1f} MB"
