"""A transition that committed but whose reply was lost is not mistaken for a lost race."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pytest

from fastapi_taskflow import (
    BackendUnavailableError,
    ManagedBackgroundTasks,
    MemoryObserver,
    TaskManager,
    TaskStatus,
)
from fastapi_taskflow.models import TaskRecord, TaskUpdate
from taskflow_memory import MemoryBackend

pytestmark = pytest.mark.anyio


class LosesOneReply(MemoryBackend):
    """Commits the first transition to ``lose`` and then fails as if the reply was lost."""

    def __init__(self, lose: TaskStatus) -> None:
        super().__init__()
        self.lose: TaskStatus | None = lose

    async def transition(
        self,
        task_id: str,
        *,
        expected: Collection[TaskStatus],
        new: TaskStatus,
        update: TaskUpdate | None = None,
        take_key: bool = False,
    ) -> TaskRecord | None:
        done = await super().transition(
            task_id, expected=expected, new=new, update=update, take_key=take_key
        )
        if new is self.lose and done is not None:
            self.lose = None
            raise BackendUnavailableError("connection reset after commit")
        return done


@pytest.mark.parametrize("lost", [TaskStatus.RUNNING, TaskStatus.SUCCESS])
async def test_a_committed_transition_with_a_lost_reply_is_recognised(lost: TaskStatus) -> None:
    observer = MemoryObserver()
    tm = TaskManager(backend=LosesOneReply(lost), observers=[observer])
    runs: list[Any] = []

    @tm.task()
    async def job() -> str:
        runs.append(1)
        return "ok"

    async with tm:
        managed = ManagedBackgroundTasks(tm)
        task_id = managed.add_task(job)
        await managed()
        record = await tm.store.aget(task_id)
    assert record is not None
    assert record.status is TaskStatus.SUCCESS and record.result == "ok"
    assert runs == [1]
    assert [e.status for e in observer.lifecycle_events] == ["running", "success"]
