"""``store.query(func_name=...)`` finds tasks by the registered, short or qualified
name (issue 8, item 5), on every backend, from the accepting instance and others."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fastapi_taskflow import InvalidTaskError, ManagedBackgroundTasks, TaskManager

pytestmark = pytest.mark.anyio

MODULE = __name__


def send_email(address: str) -> None:
    pass


class Mailer:
    @staticmethod
    def send(address: str) -> None:
        pass


def notify(address: str) -> None:  # never registered: runs once, stored by module.qualname
    pass


@pytest.fixture(params=["memory", "sqlite"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    yield "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/tasks.db"


def registered(url: str) -> TaskManager:
    tm = TaskManager(backend=url)
    tm.task()(send_email)
    tm.task(name="mail.send")(Mailer.send)
    return tm


async def test_every_name_of_a_task_finds_it(url: str) -> None:
    tm = registered(url)
    async with tm:
        managed = ManagedBackgroundTasks(tm)
        ids = {
            "send_email": managed.add_task(send_email, "a@example.com"),
            "Mailer.send": managed.add_task(Mailer.send, "b@example.com"),
            "notify": managed.add_task(notify, "c@example.com"),
        }
        await managed()
        names = {
            "send_email": ["send_email", f"{MODULE}.send_email"],
            "Mailer.send": ["mail.send", "send", "Mailer.send", f"{MODULE}.Mailer.send"],
            "notify": ["notify", f"{MODULE}.notify"],
        }
        for task, spellings in names.items():
            for spelling in spellings:
                found = (await tm.store.aquery(func_name=spelling)).items
                assert [r.task_id for r in found] == [ids[task]], spelling
        sync = await _in_thread(lambda: tm.store.query(func_name="send_email").items)
        assert [r.task_id for r in sync] == [ids["send_email"]]
        record = await tm.store.aget(ids["Mailer.send"])
        assert record is not None and record.func_name == "mail.send"  # the registered name
        assert (await tm.store.aquery(func_name="nothing_like_it")).items == []


async def test_another_instance_without_the_registrations_finds_them_too(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/tasks.db"
    accepting = registered(url)
    async with accepting:
        managed = ManagedBackgroundTasks(accepting)
        task_id = managed.add_task(send_email, "a@example.com")
        await managed()
    reader = TaskManager(backend=url)
    async with reader:
        found = (await reader.store.aquery(func_name="send_email")).items
    assert [r.task_id for r in found] == [task_id]


async def test_a_short_name_shared_by_two_tasks_is_refused_with_the_candidates() -> None:
    tm = TaskManager()
    tm.task(name="billing.send")(Mailer.send)

    def send(address: str) -> None:
        pass

    tm.task(name="sms.send")(send)
    async with tm:
        with pytest.raises(InvalidTaskError, match=r"billing\.send, sms\.send"):
            await tm.store.aquery(func_name="send")


async def _in_thread(call):  # type: ignore[no-untyped-def]
    import asyncio

    return await asyncio.to_thread(call)
