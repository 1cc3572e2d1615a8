"""Arguments as JSON: TaskArgumentError on durable backends, rehydration by type hints."""

from __future__ import annotations

import enum
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from pydantic import BaseModel

from fastapi_taskflow import ManagedBackgroundTasks, TaskArgumentError, TaskManager, TaskStatus
from fastapi_taskflow.encoding import decode_arguments, encode_arguments
from taskflow_memory import MemoryBackend


class Plan(enum.Enum):
    FREE = "free"
    PRO = "pro"


class User(BaseModel):
    name: str
    joined: datetime


class Order(BaseModel):
    id: int
    total: float


def handler(order: Order, when: datetime, ref: uuid.UUID, plan: Plan, note: str = "") -> None:
    pass


def test_rich_arguments_round_trip_through_json() -> None:
    order, when, ref = (
        Order(id=1, total=9.5),
        datetime(2030, 1, 2, tzinfo=timezone.utc),
        uuid.uuid4(),
    )
    args, kwargs = encode_arguments(
        handler, (order, when), {"ref": ref, "plan": Plan.PRO}, strict=True
    )
    assert args == [{"id": 1, "total": 9.5}, "2030-01-02T00:00:00Z"]
    back_args, back_kwargs = decode_arguments(handler, args or [], kwargs or {})
    assert back_args == (order, when)
    assert back_kwargs == {"ref": ref, "plan": Plan.PRO}


class DurableMemory(MemoryBackend):
    """The memory backend, declared durable so the engine applies the durable rules."""

    durable = True


def test_a_non_serialisable_argument_is_named_and_nothing_is_accepted() -> None:
    tm = TaskManager(backend=DurableMemory())
    managed = ManagedBackgroundTasks(tm)
    with pytest.raises(TaskArgumentError, match="positional argument 'note' of handler is a lock"):
        managed.add_task(
            handler,
            Order(id=1, total=1),
            datetime.now(timezone.utc),
            uuid.uuid4(),
            Plan.FREE,
            threading.Lock(),
        )
    with pytest.raises(TaskArgumentError, match="keyword argument 'ref'"):
        managed.add_task(handler, ref=object())
    assert managed.tasks == [] and tm.store.stats().total == 0


def test_in_process_backends_accept_any_argument() -> None:
    tm = TaskManager()
    task_id = ManagedBackgroundTasks(tm).add_task(handler, threading.Lock())
    record = tm.store.get(task_id)
    assert record is not None and record.args == [{"__taskflow_unstored__": "lock"}]


@pytest.mark.anyio
async def test_a_result_is_recorded_without_running_what_the_task_returned(
    one_request: Any,
) -> None:
    """A task that returns a generator (or data holding an iterator) gets its ``repr``
    as result, and what it returned is left unread: recording it ran it to its end (an
    endless one, ``itertools.count()``, held the event loop for ever; this generator's
    side effects ran). Data is recorded as JSON, as before."""
    tm = TaskManager()
    sent: list[int] = []

    def send_all() -> Iterator[int]:
        for n in range(3):
            sent.append(n)
            yield n

    @tm.task()
    async def lazily() -> Iterator[int]:
        return send_all()

    ids_left = iter([1, 2])

    @tm.task()
    async def held() -> dict[str, Any]:
        return {"ids": ids_left}

    @tm.task()
    async def data() -> dict[str, Any]:
        when = datetime(2030, 1, 2, tzinfo=timezone.utc)
        return {"user": User(name="ann", joined=when), "tags": {"a"}, "raw": b"\xff"}

    lazy, holding, plain = await one_request(tm, lazily, held, data)
    assert lazy.status is TaskStatus.SUCCESS and sent == []
    assert isinstance(lazy.result, str) and lazy.result.startswith("<generator object ")
    assert holding.status is TaskStatus.SUCCESS and holding.result == repr({"ids": ids_left})
    assert list(ids_left) == [1, 2]
    assert plain.result == {
        "user": {"name": "ann", "joined": "2030-01-02T00:00:00Z"},
        "tags": ["a"],
        "raw": {"__taskflow_bytes__": "/w=="},
    }


class _Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@pytest.mark.anyio
async def test_a_result_that_cannot_be_read_is_recorded_as_text(one_request: Any) -> None:
    """A result holding itself (RecursionError), or whose ``repr()`` raises: the task
    stayed RUNNING for ever and the request's next background tasks never ran (the
    error left the container). It ends SUCCESS with a text saying what it was."""
    tm = TaskManager()

    @tm.task()
    async def holds_itself() -> dict[str, Any]:
        result: dict[str, Any] = {"id": 1}
        result["self"] = result
        return result

    @tm.task()
    async def unprintable() -> _Unprintable:
        return _Unprintable()

    @tm.task()
    async def after() -> str:
        return "ran"

    cyclic, odd, last = await one_request(tm, holds_itself, unprintable, after)
    assert (cyclic.status, cyclic.result) == (TaskStatus.SUCCESS, "{'id': 1, 'self': {...}}")
    assert odd.status is TaskStatus.SUCCESS
    assert odd.result == "<_Unprintable object; its repr() raised an exception>"
    assert (last.status, last.result) == (TaskStatus.SUCCESS, "ran")


def test_an_argument_holding_itself_is_named_not_a_recursion_error() -> None:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    durable = ManagedBackgroundTasks(TaskManager(backend=DurableMemory()))
    with pytest.raises(TaskArgumentError, match="a value that contains itself"):
        durable.add_task(handler, cyclic)
    assert durable.tasks == []
    in_process = TaskManager()
    task_id = ManagedBackgroundTasks(in_process).add_task(handler, cyclic)
    record = in_process.store.get(task_id)
    assert record is not None and record.args == [{"__taskflow_unstored__": "dict"}]
