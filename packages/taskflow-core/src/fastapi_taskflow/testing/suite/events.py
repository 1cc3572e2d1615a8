"""Event fan-out: publish and subscribe, on one backend and across forks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.events import LifecycleEvent, LogEvent
from fastapi_taskflow.models import TaskStatus
from fastapi_taskflow.protocols import TaskBackend

from ._base import ConformanceBase, new_id, seconds

__all__ = ["EventTests", "ReaderTests", "sample_events"]

Event = LifecycleEvent | LogEvent


def sample_events(clock: ManualClock, task_id: str, count: int = 3) -> list[Event]:
    """Events of one task, alternating kinds, with every field set."""
    now = clock.now().replace(microsecond=654321)
    events: list[Event] = []
    for i in range(count):
        if i % 2 == 0:
            events.append(
                LifecycleEvent(
                    task_id=task_id,
                    func_name="app.tasks.report",
                    attempt=i,
                    tags={"tenant": "acme", "n": str(i)},
                    timestamp=now + seconds(i),
                    instance_id="instance-a",
                    status=TaskStatus.FAILED if i == 2 else TaskStatus.RUNNING,
                    error="boom" if i == 2 else None,
                    queue="reports",
                )
            )
        else:
            events.append(
                LogEvent(
                    task_id=task_id,
                    func_name="app.tasks.report",
                    attempt=i,
                    timestamp=now + seconds(i),
                    level="warning",
                    message=f"line {i} ✓",
                    extra={"rows": [1, 2], "ok": True, "none": None},
                )
            )
    return events


async def receive(stream: AsyncIterator[Event], task_id: str, count: int) -> list[Event]:
    """Read events until ``count`` of ``task_id``'s have arrived (others are ignored)."""
    received: list[Event] = []
    while len(received) < count:
        event = await anext(stream)
        if event.task_id == task_id:
            received.append(event)
    return received


class EventTests(ConformanceBase):
    """``publish`` and ``subscribe``."""

    async def test_events_round_trip_in_order(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Events published after subscribing arrive, equal and in publication order.

        If this fails, check that the subscription is listening when ``async with``
        returns, and that events are encoded with ``events.bus_event_adapter`` (both
        kinds, every field) and decoded back.
        """
        task_id = new_id()
        sent = sample_events(clock, task_id, 6)
        with anyio.fail_after(self.event_timeout):
            async with backend.subscribe() as stream:
                for event in sent:
                    await backend.publish(event)
                got = await receive(stream, task_id, len(sent))
        assert got == sent
        assert [type(e) for e in got] == [type(e) for e in sent]

    async def test_a_batch_arrives_whole_and_in_order(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """``publish_many`` delivers every event of a batch, in the batch's order, between
        the events published before and after it; a large event (a long log line) among
        them too.

        If this fails, check that ``publish_many`` publishes each event as ``publish``
        does (in one write where the backend can) and keeps their order.
        """
        task_id = new_id()
        first, *batch, last = sample_events(clock, task_id, 7)
        long_line = LogEvent(
            task_id=task_id,
            func_name="app.tasks.report",
            attempt=1,
            timestamp=clock.now(),
            message="x" * 20_000,
        )
        batch.insert(2, long_line)
        with anyio.fail_after(self.event_timeout):
            async with backend.subscribe() as stream:
                await backend.publish(first)
                await backend.publish_many(batch)
                await backend.publish_many([])
                await backend.publish(last)
                got = await receive(stream, task_id, len(batch) + 2)
        assert got == [first, *batch, last]

    async def test_a_subscriber_can_leave_out_one_instances_events(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """``subscribe(skip_instance=...)`` delivers every event but those published by
        that instance (an instance listening for the others'), in order.

        If this fails, check that events are encoded with
        ``events.encode_bus_event`` (the publisher's id comes first) and decoded with
        ``events.decode_bus_event(payload, skip_instance)``.
        """
        task_id = new_id()
        sent = sample_events(clock, task_id, 6)
        mine = [event.model_copy(update={"instance_id": "instance-b"}) for event in sent[::2]]
        with anyio.fail_after(self.event_timeout):
            async with backend.subscribe(skip_instance="instance-b") as stream:
                await backend.publish_many([*mine[:2], *sent, mine[2]])
                got = await receive(stream, task_id, len(sent))
                assert got == sent
                marker = sample_events(clock, new_id(), 1)[0]
                await backend.publish(mine[0])
                await backend.publish(marker)
                assert await anext(stream) == marker

    async def test_every_subscriber_gets_every_event(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Two subscriptions on one backend each receive every event.

        If this fails, check that publish() fans out rather than handing each event to
        one consumer.
        """
        task_id = new_id()
        sent = sample_events(clock, task_id, 3)
        with anyio.fail_after(self.event_timeout):
            async with backend.subscribe() as first, backend.subscribe() as second:
                for event in sent:
                    await backend.publish(event)
                assert await receive(first, task_id, 3) == sent
                assert await receive(second, task_id, 3) == sent

    async def test_events_reach_a_fork(self, backend: TaskBackend, clock: ManualClock) -> None:
        """Events published on a backend reach a fork's subscriber, and the reverse.

        Forks stand in for other instances. If this fails, check that events travel
        through the shared storage/server, not an in-object list.
        """
        fork = backend.fork()
        await fork.open()
        try:
            to_fork, to_parent = new_id(), new_id()
            with anyio.fail_after(self.event_timeout):
                async with fork.subscribe() as on_fork, backend.subscribe() as on_parent:
                    for event in sample_events(clock, to_fork):
                        await backend.publish(event)
                    for event in sample_events(clock, to_parent):
                        await fork.publish(event)
                    assert await receive(on_fork, to_fork, 3) == sample_events(clock, to_fork)
                    assert await receive(on_parent, to_parent, 3) == sample_events(clock, to_parent)
        finally:
            await fork.close()

    async def test_subscribe_again_after_leaving(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """Leaving a subscription is clean: publishing still works, a new one receives.

        If this fails, check that leaving ``async with backend.subscribe()`` unsubscribes
        without closing what other subscriptions or publish() use.
        """
        task_id = new_id()
        with anyio.fail_after(self.event_timeout):
            async with backend.subscribe():
                pass
            await backend.publish(sample_events(clock, task_id, 1)[0])
            async with backend.subscribe() as stream:
                [event] = sample_events(clock, task_id, 1)
                await backend.publish(event)
                assert await receive(stream, task_id, 1) == [event]


class ReaderTests(ConformanceBase):
    """``announce_reader``, ``withdraw_reader`` and ``readers``: who reads the fan-out."""

    async def test_an_announced_reader_is_listed_until_its_ttl(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """A reader is listed from its announcement until ``ttl_seconds`` later; an
        announcement again extends it; every fork sees the same readers.

        If this fails, check that announce_reader() stores an expiry judged by the
        injected clock (not a server TTL) and that readers() leaves out expired ones.
        """
        dashboard, cli = new_id(), new_id()
        assert await backend.readers() == set()
        await backend.announce_reader(dashboard, ttl_seconds=10)
        await backend.announce_reader(cli, ttl_seconds=30)
        fork = backend.fork()
        await fork.open()
        try:
            assert await fork.readers() == {dashboard, cli}
            clock.advance(8)
            await fork.announce_reader(dashboard, ttl_seconds=10)  # now due at 18
            clock.advance(8)  # 16: both live
            assert await backend.readers() == {dashboard, cli}
            clock.advance(3)  # 19: past the extended ttl
            assert await backend.readers() == {cli}
            clock.advance(12)  # 31
            assert await fork.readers() == set()
        finally:
            await fork.close()

    async def test_a_withdrawn_reader_is_gone(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """``withdraw_reader`` removes one announcement at once; an unknown one is a no-op.

        If this fails, check that withdraw_reader() deletes by reader id only.
        """
        first, second = new_id(), new_id()
        await backend.announce_reader(first, ttl_seconds=30)
        await backend.announce_reader(second, ttl_seconds=30)
        await backend.withdraw_reader(first)
        await backend.withdraw_reader(new_id())  # never announced
        assert await backend.readers() == {second}
        await backend.withdraw_reader(second)
        assert await backend.readers() == set()
        await backend.announce_reader(first, ttl_seconds=30)  # again after withdrawing
        assert await backend.readers() == {first}
