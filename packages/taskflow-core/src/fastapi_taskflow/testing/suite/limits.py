"""The documented limits: values at the limits round-trip, values past them are refused
at ``add_task()`` identically on every backend, and a task's final write always lands.

See :mod:`fastapi_taskflow.limits` for the limits themselves.
"""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import pytest

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.errors import InvalidTaskError, TaskArgumentError
from fastapi_taskflow.limits import (
    IDEMPOTENCY_KEY_MAX,
    NAME_MAX,
    PRIORITY_MAX,
    PRIORITY_MIN,
    TAGS_MAX_JSON,
)
from fastapi_taskflow.models import TaskQuery, TaskRecord, TaskStatus, TaskUpdate
from fastapi_taskflow.protocols import TaskBackend

from ._base import ConformanceBase, create_task

__all__ = ["LimitTests", "hostile_add_task_calls"]

Q = "limits"


def _big_tags() -> dict[str, str]:
    """Tags whose JSON is exactly ``TAGS_MAX_JSON`` characters, with non-ASCII text."""
    tags = {"user": "Zoë 😀", "fill": ""}
    base = len(json.dumps(tags))
    tags["fill"] = "x" * (TAGS_MAX_JSON - base)
    return tags


def hostile_add_task_calls() -> list[tuple[str, dict[str, Any], str]]:
    """``(label, add_task keyword arguments, fragment of the error)`` for every value
    past a documented limit that is not an argument of the task."""
    too_big = _big_tags()
    too_big["fill"] += "x"
    return [
        ("priority too high", {"priority": PRIORITY_MAX + 1}, "priority must be between"),
        ("priority 2**31", {"priority": 2**31}, "priority must be between"),
        ("priority 2**63", {"priority": 2**63}, "priority must be between"),
        ("priority too low", {"priority": PRIORITY_MIN - 1}, "priority must be between"),
        ("surrogate in tag value", {"tags": {"k": "a\ud800"}}, "lone surrogate"),
        ("surrogate in tag key", {"tags": {"\udfff": "v"}}, "lone surrogate"),
        ("NUL in tag value", {"tags": {"k": "a\x00b"}}, "NUL"),
        ("NUL in tag key", {"tags": {"k\x00": "v"}}, "NUL"),
        ("tags too big", {"tags": too_big}, "the limit is"),
        ("surrogate in key", {"idempotency_key": "k\ud800"}, "idempotency_key contains"),
        ("NUL in key", {"idempotency_key": "k\x00"}, "idempotency_key contains"),
        ("empty key", {"idempotency_key": ""}, "idempotency_key must be 1 to"),
        ("key too long", {"idempotency_key": "k" * (IDEMPOTENCY_KEY_MAX + 1)}, "1 to"),
    ]


async def _job(*args: Any, **kwargs: Any) -> Any:
    return args[0] if args else None


class LimitTests(ConformanceBase):
    """Values at the documented limits are stored; values past them never reach the store."""

    async def test_values_at_the_limits_round_trip(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """A record at every documented limit is stored and read back unchanged.

        If this fails, check the column sizes and types of your store against
        ``fastapi_taskflow.limits``: 32-bit priorities (both signs), tags of
        ``TAGS_MAX_JSON`` characters of JSON, idempotency keys of
        ``IDEMPOTENCY_KEY_MAX`` characters (any Unicode), names of ``NAME_MAX``
        characters, NUL characters inside JSON arguments and results.
        """
        key = "é😀" + "k" * (IDEMPOTENCY_KEY_MAX - 2)
        tags = _big_tags()
        high = await create_task(
            backend,
            clock,
            priority=PRIORITY_MAX,
            tags=tags,
            idempotency_key=key,
            func_name="f" * NAME_MAX,
            queue="q" * NAME_MAX,
            args=["a\x00b", "😀", {"nested\x00": ["é"]}],
            kwargs={"ключ": "значение\x00"},
        )
        low = await create_task(backend, clock, priority=PRIORITY_MIN)
        assert await backend.get(high.task_id) == high
        assert (await backend.get(low.task_id)) == low
        assert high.priority == PRIORITY_MAX and low.priority == PRIORITY_MIN
        assert high.tags == tags and high.args == ["a\x00b", "😀", {"nested\x00": ["é"]}]
        found = await backend.find_by_key(key)
        assert found is not None and found.task_id == high.task_id
        page = await backend.query(TaskQuery(tags={"user": "Zoë 😀"}))
        assert [item.task_id for item in page.items] == [high.task_id]
        await backend.transition(
            high.task_id, expected=[TaskStatus.PENDING], new=TaskStatus.RUNNING
        )
        done = await backend.transition(
            high.task_id,
            expected=[TaskStatus.RUNNING],
            new=TaskStatus.SUCCESS,
            update=TaskUpdate(result={"out\x00": "a\x00b 😀"}, finished_at=clock.now()),
        )
        assert done is not None and done.result == {"out\x00": "a\x00b 😀"}
        stored = await backend.get(high.task_id)
        assert stored is not None and stored.result == {"out\x00": "a\x00b 😀"}

    async def test_lookups_of_values_no_store_holds_find_nothing(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """``get`` and ``find_by_key`` of a value holding a NUL or a lone surrogate
        answer None, as for any id or key no task has: no task can have one
        (``add_task()`` refuses such a key), and the value comes from outside (a URL, a
        command line).

        If this fails, your server or driver refused the value itself: answer None
        before sending it, when ``fastapi_taskflow.limits.storable_text(value)`` is
        False.
        """
        stored = await create_task(backend, clock, idempotency_key="order-1")
        for value in ("a\x00b", "\ud800", "k\udfff\x00", f"{stored.task_id}\x00", "order-1\x00"):
            assert await backend.get(value) is None, repr(value)
            assert await backend.find_by_key(value) is None, repr(value)
        assert await backend.get(stored.task_id) == stored
        found = await backend.find_by_key("order-1")
        assert found is not None and found.task_id == stored.task_id

    async def test_priority_limits_order_claims(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """The highest and lowest priorities are queued and claimed in order.

        If this fails, check that your queue's priority column or score holds a signed
        32-bit integer and its negation.
        """
        ids = {}
        for priority in (PRIORITY_MIN, 0, PRIORITY_MAX):
            record = await create_task(backend, clock, queue=Q, priority=priority)
            await backend.enqueue(record.task_id, queue=Q, priority=priority)
            ids[priority] = record.task_id
        claimed = await backend.claim(queue=Q, owner="w", limit=3)
        assert [c.task_id for c in claimed] == [ids[PRIORITY_MAX], ids[0], ids[PRIORITY_MIN]]
        assert [c.priority for c in claimed] == [PRIORITY_MAX, 0, PRIORITY_MIN]

    @pytest.mark.parametrize(
        ("label", "options", "fragment"),
        hostile_add_task_calls(),
        ids=[case[0] for case in hostile_add_task_calls()],
    )
    async def test_add_task_refuses_values_past_the_limits(
        self,
        backend: TaskBackend,
        clock: ManualClock,
        label: str,
        options: dict[str, Any],
        fragment: str,
    ) -> None:
        """``add_task()`` raises ``InvalidTaskError`` naming the field and the limit, and
        nothing is stored: the same answer on every backend.

        If this fails, the engine's checks changed (``fastapi_taskflow.limits``): a
        backend does not take part in them.
        """
        from fastapi_taskflow.manager import TaskManager

        tm = TaskManager(backend=backend.fork(), clock=clock)
        try:
            with pytest.raises(InvalidTaskError, match=fragment):
                tm.add_task(_job, 1, **options)
            assert len(tm._engine.pending) == 0
        finally:
            await tm.shutdown(timeout=5)
        assert (await backend.stats()).total == 0

    async def test_add_task_refuses_unstorable_arguments_on_durable_backends(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """A lone surrogate in an argument is a ``TaskArgumentError`` naming it on a
        durable backend (arguments are stored as UTF-8 JSON); an in-process backend
        passes the very object to the task. A NUL inside an argument is fine anywhere.

        If this fails, check ``durable``: True when tasks outlive the process.
        """
        from fastapi_taskflow.manager import TaskManager

        tm = TaskManager(backend=backend.fork(), clock=clock)
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
            (("a\ud800",), {}),
            ((), {"payload": {"k": ["ok", "\udcff"]}}),
            ((), {"payload": {"\ud800": 1}}),
        ]
        accepted: list[str] = []
        async with tm:
            for args, kwargs in calls:
                if backend.durable:
                    with pytest.raises(TaskArgumentError, match="lone surrogate"):
                        tm.add_task(_job, *args, **kwargs)
                else:
                    accepted.append(tm.add_task(_job, *args, **kwargs))
            accepted.append(tm.add_task(_job, "a\x00b"))
            for task_id in accepted:
                assert (await _terminal(tm, task_id)).status is TaskStatus.SUCCESS

    async def test_final_write_lands_with_unstorable_text(
        self, backend: TaskBackend, clock: ManualClock
    ) -> None:
        """A result with a lone surrogate and an error or log line with a NUL end in a
        terminal, readable record, the characters replaced and the replacement said.

        If this fails with a task stuck RUNNING, your store refused a value the engine
        had cleaned: check that it stores any valid UTF-8 text without NUL in ``error``
        and log messages, and any JSON in ``result``.
        """
        from fastapi_taskflow.context import task_log
        from fastapi_taskflow.manager import TaskManager

        async def returns_surrogate() -> str:
            return "caf\udce9"

        async def raises_nul() -> None:
            task_log("about to fail\x00", detail="\udce9")
            raise ValueError("bad\x00value \udce9")

        tm = TaskManager(backend=backend.fork(), clock=clock)
        tm.task(name="limits.returns_surrogate")(returns_surrogate)
        tm.task(name="limits.raises_nul")(raises_nul)
        async with tm:
            ok = tm.add_task(returns_surrogate)
            bad = tm.add_task(raises_nul)
            ok_record = await _terminal(tm, ok)
            bad_record = await _terminal(tm, bad)
        assert ok_record.status is TaskStatus.SUCCESS and ok_record.result == "caf\ufffd"
        assert bad_record.status is TaskStatus.FAILED
        assert bad_record.error is not None
        assert bad_record.error.startswith("ValueError: bad\ufffdvalue \ufffd")
        assert "U+FFFD" in bad_record.error
        messages = [entry.message for entry in bad_record.logs]
        assert "about to fail\ufffd" in messages


TERMINAL_WAIT = 20.0
"""Seconds (of real time) a test waits for a task to finish."""


async def _terminal(tm: Any, task_id: str) -> TaskRecord:
    deadline = time.monotonic() + TERMINAL_WAIT
    while True:
        record = await tm.store.aget(task_id)
        if record is not None and record.status.is_terminal:
            return record  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} not finished after {TERMINAL_WAIT}s: {record}")
        await anyio.sleep(0.01)
