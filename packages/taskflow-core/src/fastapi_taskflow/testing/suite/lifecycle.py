"""The backend object itself: protocol shape, open/close, clock and forks."""

from __future__ import annotations

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.models import TaskStatus
from fastapi_taskflow.protocols import Backend, Store, TaskBackend

from ._base import ConformanceBase, create_task
from .queues import Q, stored_ids

__all__ = ["LifecycleTests"]


class LifecycleTests(ConformanceBase):
    """``open``, ``close``, ``fork``, ``clock`` and ``durable``."""

    async def test_is_a_task_backend(self, backend: TaskBackend, clock: ManualClock) -> None:
        """The backend satisfies the protocols and uses the clock it was given.

        If this fails, check that your class defines every Store and Backend method,
        ``open``/``close``/``fork``, a bool ``durable`` and ``clock`` (the one passed in
        by the ``backend`` fixture: build it with ``clock=clock``).
        """
        assert isinstance(backend, Store)
        assert isinstance(backend, Backend)
        assert isinstance(backend, TaskBackend)
        assert isinstance(backend.durable, bool)
        assert backend.clock is clock

    async def test_open_is_idempotent(self, backend: TaskBackend, clock: ManualClock) -> None:
        """Opening an open backend again changes nothing and loses nothing.

        If this fails, check that open() returns early when already connected and that
        schema creation is "if not exists".
        """
        task = await create_task(backend, clock)
        await backend.open()
        await backend.open()
        assert await backend.get(task.task_id) == task

    async def test_fork_shares_everything(self, backend: TaskBackend, clock: ManualClock) -> None:
        """A fork sees the same tasks, queues, owners, heartbeats and locks, and has the
        same clock.

        If this fails, check that fork() returns an unopened backend over the same
        storage (same URL / key prefix / schema), with ``clock`` passed on.
        """
        fork = backend.fork()
        assert fork is not backend
        await fork.open()
        try:
            assert fork.clock is clock
            mine = await create_task(backend, clock)
            theirs = await create_task(fork, clock)
            assert await fork.get(mine.task_id) == mine
            assert await backend.get(theirs.task_id) == theirs
            moved = await fork.transition(
                mine.task_id, expected=[TaskStatus.PENDING], new=TaskStatus.RUNNING
            )
            assert moved is not None
            assert await backend.get(mine.task_id) == moved
            [queued] = await stored_ids(backend, clock, 1)
            await backend.enqueue(queued, queue=Q)
            assert await fork.queue_length(Q) == 1
            assert [c.task_id for c in await fork.claim(queue=Q, owner="f")] == [queued]
            claimed = await backend.get(queued)
            assert claimed is not None and claimed.owner == "f"
            assert await backend.owners() == {"f"}
            await fork.beat("f")
            assert await backend.heartbeats() == {"f": clock.now()}
            await backend.forget_instance("f")
            assert await fork.heartbeats() == {}
            assert await fork.acquire_lock("tick", owner="f", ttl_seconds=30) is True
            assert await backend.acquire_lock("tick", owner="p", ttl_seconds=30) is False
        finally:
            await fork.close()

    async def test_close_is_idempotent_and_spares_the_parent(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Closing a fork twice is fine, and the backend it came from keeps working.

        If this fails, check that close() tolerates a second call and that a fork owns
        (and closes) only its own connections.
        """
        fork = backend.fork()
        await fork.open()
        task = await create_task(fork, clock)
        await fork.close()
        await fork.close()
        assert await backend.get(task.task_id) == task
        await create_task(backend, clock)
        assert (await backend.stats()).total == 2

    async def test_fork_open_close_keeps_data(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """A fork that is opened and closed without use leaves the backend intact.

        If this fails, check that open()/close() of a fork never drop or reset the
        shared storage (no "drop schema" or "flush" on close).
        """
        task = await create_task(backend, clock)
        fork = backend.fork()
        await fork.open()
        await fork.close()
        assert await backend.get(task.task_id) == task
