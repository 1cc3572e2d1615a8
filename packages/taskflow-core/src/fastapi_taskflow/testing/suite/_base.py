"""What every area of the conformance suite shares: fixtures, record factories, timeouts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, ClassVar

import pytest

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.models import Applied, TaskRecord, TaskStatus
from fastapi_taskflow.protocols import TaskBackend

__all__ = [
    "read_back",
    "GUARD_TEST_NAME",
    "ConformanceBase",
    "create_task",
    "make_record",
    "new_id",
    "seconds",
]

GUARD_TEST_NAME = "test_no_standard_test_is_overridden"
"""The guard test's name; a subclass may not override it."""

SUITE_PACKAGE = "fastapi_taskflow.testing.suite"
"""Classes defined in modules under this package hold the standard tests."""


def read_back(results: list[TaskRecord | Applied | None]) -> list[TaskRecord | None]:
    """The results of ``transition_many`` / ``write_many`` items sent with
    ``read_back=True`` (the default), which must each be the record or None."""
    assert not any(isinstance(result, Applied) for result in results), (
        "a change with read_back=True was answered APPLIED instead of its record"
    )
    return [result for result in results if not isinstance(result, Applied)]


def new_id(prefix: str = "t") -> str:
    """Return a fresh task id: ``prefix`` plus 32 lowercase hex digits.

    Ids are lowercase ASCII of one length, so ``task_id`` order is the same under any
    collation a database might apply.
    """
    return f"{prefix}{uuid.uuid4().hex}"


def seconds(value: float) -> timedelta:
    """Return ``timedelta(seconds=value)``; reads well next to ``clock.now()``."""
    return timedelta(seconds=value)


def make_record(
    clock: ManualClock,
    *,
    task_id: str | None = None,
    func_name: str = "tests.job",
    status: TaskStatus = TaskStatus.PENDING,
    created_at: datetime | None = None,
    **fields: Any,
) -> TaskRecord:
    """Build a task record stamped with the clock's time.

    Args:
        clock: the suite's clock; ``created_at`` and ``updated_at`` default to its time.
        task_id: the id; a fresh one by default.
        func_name: the task's function name.
        status: the initial status.
        created_at: overrides the creation time (``updated_at`` follows it).
        **fields: any other :class:`~fastapi_taskflow.models.TaskRecord` field.
    """
    stamp = created_at or clock.now()
    fields.setdefault("updated_at", stamp)
    return TaskRecord(
        task_id=task_id or new_id(),
        func_name=func_name,
        status=status,
        created_at=stamp,
        **fields,
    )


async def create_task(backend: TaskBackend, clock: ManualClock, **fields: Any) -> TaskRecord:
    """Create a task (see :func:`make_record` for ``fields``) and return the stored record.

    Fails the test when the backend does not report ``created=True``.
    """
    result = await backend.create(make_record(clock, **fields))
    assert result.created, (
        "create() of a brand-new record returned created=False; check that create() only "
        "refuses a record whose task_id exists or whose idempotency key is held."
    )
    return result.record


class ConformanceBase:
    """Fixtures every area of the suite uses; subclass a ``*Tests`` class, not this.

    A subclass provides the ``backend`` fixture: an async generator that builds a fresh,
    empty backend with ``clock=clock``, opens it, yields it and closes it.
    """

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.anyio]

    event_timeout: ClassVar[float] = 10.0
    """Seconds (of real time) a test waits for a published event before failing."""

    concurrency_timeout: ClassVar[float] = 60.0
    """Seconds (of real time) a concurrency test may take before it is declared stuck."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if GUARD_TEST_NAME in vars(cls) and not cls.__module__.startswith(SUITE_PACKAGE):
            raise TypeError(
                f"{cls.__qualname__} overrides {GUARD_TEST_NAME}, the test that keeps the "
                "standard tests honest; remove the override and mark the tests you opt out "
                "of with @pytest.mark.xfail(reason=...)."
            )

    @pytest.fixture
    def anyio_backend(self) -> str:
        """Run every test of the suite on asyncio."""
        return "asyncio"

    @pytest.fixture
    def clock(self) -> ManualClock:
        """The injected time: tests advance it instead of sleeping."""
        return ManualClock()

    @pytest.fixture
    def backend(self) -> Iterator[TaskBackend]:
        """Placeholder that fails: a conformance subclass must define ``backend``."""
        pytest.fail(
            "define an async `backend(self, clock)` fixture in your BackendConformance "
            "subclass: build a fresh, empty backend with clock=clock, open it, yield it, "
            "close it"
        )
        yield  # pragma: no cover
