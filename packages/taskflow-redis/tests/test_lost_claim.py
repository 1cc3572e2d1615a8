"""A claim whose reply was lost after its script ran is recovered by the next claim.

The server runs the real script and the answer is dropped on the client side: the
backend's script call is wrapped so that, for a claim, it awaits the real call and then
raises the error a dropped connection gives. The tasks that claim took are then owned by
the (live) claimer and on no queue; the next ``claim()`` of the same queue and claimer
must hand them over, once, if they are still the claimer's to run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from redis import exceptions as rx

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.errors import BackendUnavailableError
from fastapi_taskflow.models import TaskRecord, TaskStatus
from taskflow_redis import RedisBackend
from taskflow_redis.claims import MAX_UNCONFIRMED, ClaimTokens
from taskflow_redis.connection import translated

from .conftest import keys_matching

pytestmark = pytest.mark.anyio


class LoseReplies:
    """Wraps ``backend._run``: the next ``lose`` claim calls run on the server (or, with
    ``send=False``, are held back unsent), then fail as a dropped connection fails."""

    def __init__(self, backend: RedisBackend, monkeypatch: pytest.MonkeyPatch) -> None:
        self.backend = backend
        self.real = backend._run
        self.lose = 0
        self.send = True
        self.replies: list[Any] = []
        self.held: list[list[Any]] = []
        monkeypatch.setattr(backend, "_run", self)

    async def __call__(self, name: str, args: Sequence[Any], action: str) -> Any:
        if name != "claim" or self.lose == 0:
            return await self.real(name, args, action)
        self.lose -= 1
        if self.send:
            self.replies.append(await self.real(name, args, action))
        else:
            self.held.append(list(args))
        exc = rx.ConnectionError("Connection closed by server.")
        error = translated(exc, action, self.backend._where())
        assert error is not None
        raise error from exc

    async def lost_claim(self, *, queue: str, owner: str, limit: int) -> None:
        """One claim call whose reply is lost."""
        self.lose = 1
        with pytest.raises(BackendUnavailableError, match="unreachable while claiming"):
            await self.backend.claim(queue=queue, owner=owner, limit=limit)


@pytest.fixture
def lossy(backend: RedisBackend, monkeypatch: pytest.MonkeyPatch) -> LoseReplies:
    return LoseReplies(backend, monkeypatch)


async def queued(
    backend: RedisBackend, clock: ManualClock, ids: str, *, queue: str = "q", priority: int = 0
) -> None:
    """Create PENDING tasks (owned by their acceptor) and put them on ``queue``, in order."""
    for task_id in ids:
        now = clock.now()
        record = TaskRecord(
            task_id=task_id,
            func_name="tests.job",
            queue=queue,
            created_at=now,
            updated_at=now,
            owner="acceptor",
        )
        assert (await backend.create(record)).created
        await backend.enqueue(task_id, queue=queue, priority=priority)
        clock.advance(0.001)


async def claim(backend: RedisBackend, limit: int, *, owner: str = "w") -> list[str]:
    return [c.task_id for c in await backend.claim(queue="q", owner=owner, limit=limit)]


async def owner_of(backend: RedisBackend, task_id: str) -> str | None:
    record = await backend.get(task_id)
    assert record is not None
    return record.owner


async def test_a_lost_reply_is_recovered_by_the_next_claim_once(
    backend: RedisBackend, clock: ManualClock, lossy: LoseReplies, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskflow_redis")
    await queued(backend, clock, "abc", priority=4)
    await lossy.lost_claim(queue="q", owner="w", limit=2)
    assert [lossy.replies[0][i] for i in (1, 3)] == [b"a", b"b"]  # the script did run
    assert await backend.queue_length("q") == 1
    assert await owner_of(backend, "a") == "w"
    claims = await backend.claim(queue="q", owner="w", limit=2)
    assert [(c.task_id, c.priority, c.queue) for c in claims] == [("a", 4, "q"), ("b", 4, "q")]
    assert "handed over 2 task(s) taken by an earlier claim whose reply was lost" in caplog.text
    assert await claim(backend, 5) == ["c"]
    assert await claim(backend, 5) == []
    assert backend._claims.unconfirmed("q", "w") == []


async def test_recovered_tasks_count_toward_the_limit_and_the_rest_go_back_in_place(
    backend: RedisBackend, clock: ManualClock, lossy: LoseReplies
) -> None:
    await queued(backend, clock, "abc")
    await lossy.lost_claim(queue="q", owner="w", limit=3)
    assert await backend.queue_length("q") == 0
    await queued(backend, clock, "d")
    assert await claim(backend, 1) == ["a"]
    assert await backend.queue_length("q") == 3  # b and c are back, before d
    assert await claim(backend, 5) == ["b", "c", "d"]
    assert await claim(backend, 5) == []


async def test_only_the_claimer_and_the_queue_of_the_lost_call_recover_it(
    backend: RedisBackend, clock: ManualClock, lossy: LoseReplies
) -> None:
    await queued(backend, clock, "ab")
    await queued(backend, clock, "x", queue="other")
    await lossy.lost_claim(queue="q", owner="w", limit=1)
    assert await claim(backend, 5, owner="v") == ["b"]
    assert [c.task_id for c in await backend.claim(queue="other", owner="w")] == ["x"]
    assert await claim(backend, 5) == ["a"]


async def test_a_lost_reply_of_a_claim_that_took_nothing(
    backend: RedisBackend, clock: ManualClock, lossy: LoseReplies
) -> None:
    await lossy.lost_claim(queue="q", owner="w", limit=2)
    assert lossy.replies == [[0]]  # ran, took nothing
    await queued(backend, clock, "ab")
    await lossy.lost_claim(queue="q", owner="w", limit=1)  # took a
    assert len(backend._claims.unconfirmed("q", "w")) == 2
    assert await claim(backend, 1) == ["a"]
    assert backend._claims.unconfirmed("q", "w") == []
    assert await claim(backend, 5) == ["b"]
    assert await claim(backend, 5) == []


async def test_two_lost_replies_in_a_row(
    backend: RedisBackend, clock: ManualClock, lossy: LoseReplies
) -> None:
    await queued(backend, clock, "abcd")
    await lossy.lost_claim(queue="q", owner="w", limit=1)  # took a
    await lossy.lost_claim(queue="q", owner="w", limit=2)  # handed a back, took b
    assert lossy.replies[1][0] == 1  # a handed back
    assert [lossy.replies[1][i] for i in (1, 3)] == [b"a", b"b"]
    assert await backend.queue_length("q") == 2
    assert await claim(backend, 3) == ["a", "b", "c"]
    assert await claim(backend, 5) == ["d"]
    assert await claim(backend, 5) == []


async def test_a_recovered_task_that_finished_was_adopted_or_queued_again_is_skipped(
    backend: RedisBackend, clock: ManualClock, lossy: LoseReplies
) -> None:
    await queued(backend, clock, "abcd")
    await lossy.lost_claim(queue="q", owner="w", limit=4)
    cancelled = await backend.transition(
        "a", expected=[TaskStatus.PENDING], new=TaskStatus.CANCELLED
    )
    assert cancelled is not None
    assert await backend.adopt("b", owner="w", new_owner="other") is not None
    await backend.enqueue("c", queue="q", not_before=clock.now() + timedelta(seconds=30))
    assert await claim(backend, 5) == ["d"]
    assert await owner_of(backend, "b") == "other"
    clock.advance(31)
    assert await claim(backend, 5) == ["c"]  # when due, once
    assert await claim(backend, 5) == []


async def test_a_task_started_since_is_not_handed_over_again(
    backend: RedisBackend, clock: ManualClock, lossy: LoseReplies
) -> None:
    await queued(backend, clock, "ab")
    await lossy.lost_claim(queue="q", owner="w", limit=2)
    started = await backend.transition("a", expected=[TaskStatus.PENDING], new=TaskStatus.RUNNING)
    assert started is not None
    assert await claim(backend, 5) == ["b"]


async def test_a_claim_sent_twice_answers_what_it_took_the_first_time(
    backend: RedisBackend, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A driver retry resends the same call after its first reply was lost."""
    await queued(backend, clock, "abc")
    real = backend._run

    async def twice(name: str, args: Sequence[Any], action: str) -> Any:
        if name == "claim":
            await real(name, args, action)
        return await real(name, args, action)

    monkeypatch.setattr(backend, "_run", twice)
    assert await claim(backend, 2) == ["a", "b"]
    monkeypatch.setattr(backend, "_run", real)
    assert await claim(backend, 5) == ["c"]


async def test_a_lost_call_that_reaches_the_server_after_its_recovery_takes_nothing(
    backend: RedisBackend, clock: ManualClock, lossy: LoseReplies
) -> None:
    await queued(backend, clock, "ab")
    lossy.send = False
    await lossy.lost_claim(queue="q", owner="w", limit=2)
    assert await claim(backend, 1) == ["a"]
    [late] = lossy.held
    assert await lossy.real("claim", late, "claiming late") == [0]
    assert await backend.queue_length("q") == 1
    assert await claim(backend, 5) == ["b"]


async def test_a_successful_claim_deletes_the_log_of_the_previous_one(
    backend: RedisBackend, clock: ManualClock
) -> None:
    client = backend.client

    async def logs() -> int:
        return len(await keys_matching(client, backend._keys.base + "claim:*"))

    await queued(backend, clock, "ab")
    assert await claim(backend, 1) == ["a"]
    assert await logs() == 1
    assert await claim(backend, 1) == ["b"]
    assert await logs() == 1
    assert await claim(backend, 1) == []
    assert await logs() == 0
    assert backend._claims._slots == {}


def test_failed_calls_remembered_are_capped_and_settled_by_the_call_that_carried_them() -> None:
    tokens = ClaimTokens()
    first = tokens.start("q", "w")
    tokens.failed("q", "w", first)
    carrying = tokens.start("q", "w")
    assert carrying.unconfirmed == (first.token,)
    for _ in range(MAX_UNCONFIRMED + 5):
        tokens.failed("q", "w", tokens.start("q", "w"))
    assert len(tokens.unconfirmed("q", "w")) == MAX_UNCONFIRMED
    assert tokens.unconfirmed("q", "w")[0] == first.token
    tokens.succeeded("q", "w", carrying, took=False)
    assert first.token not in tokens.unconfirmed("q", "w")
    assert len(tokens.unconfirmed("q", "w")) == MAX_UNCONFIRMED - 1
