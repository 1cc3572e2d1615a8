"""What a user reads when a SQL URL is wrong (issue 8, items 3 and 7): the password is
masked everywhere, an unknown option is named with the valid ones, a missing SQLite
directory says so, and a missing driver names the extra users install."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastapi_taskflow import TaskManager
from fastapi_taskflow.errors import BackendUnavailableError, BackendURLError
from taskflow_sql import SQLBackend

pytestmark = pytest.mark.anyio

SECRET = "s3cret"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://app:{SECRET}@db",  # no database
        f"postgresql://app:{SECRET}@db:notaport/app",  # malformed
        f"mysql://app:{SECRET}@db/app?schema=x",  # a PostgreSQL-only option
        f"postgresql://app:{SECRET}@db/app?pool_size=many",
        f"oracle://app:{SECRET}@db/app",  # not a SQL backend URL
        f"postgresql+nosuchdriver://app:{SECRET}@db/app",  # driver not installed
    ],
)
async def test_url_errors_never_show_the_password(url: str) -> None:
    with pytest.raises(BackendURLError) as info:
        backend = SQLBackend(url)
        await backend.open()
    assert SECRET not in str(info.value)
    assert "***" in str(info.value) or "://" not in str(info.value)


async def test_a_missing_driver_suggests_the_extra_users_install() -> None:
    backend = SQLBackend(f"postgresql+psycopg2://app:{SECRET}@db/app")
    with pytest.raises(BackendURLError) as info:
        await backend.open()
    assert 'pip install "taskflow-core[postgres]"' in str(info.value)
    assert "taskflow-sql[" not in str(info.value) and SECRET not in str(info.value)


@pytest.mark.parametrize(
    ("url", "driver_option"),
    [
        (f"postgresql://app:{SECRET}@127.0.0.1:1/app?prefx=x&ssl=disable", "command_timeout"),
        (f"mysql://app:{SECRET}@127.0.0.1:1/app?prefx=x&charset=utf8mb4", "connect_timeout"),
    ],
)
async def test_an_unknown_server_url_option_is_named_with_the_valid_ones(
    url: str, driver_option: str
) -> None:
    tm = TaskManager(backend=url)
    with pytest.raises(BackendURLError) as info:
        async with tm:
            pass
    message = str(info.value)
    assert "unknown option 'prefx'" in message
    assert "prefx=x" in message and "@<host>:1/app?" in message  # the query is kept
    assert "127.0.0.1" not in message  # the address is not
    assert "table_prefix" in message and driver_option in message
    assert SECRET not in message and "TypeError" not in message


def test_an_unknown_sqlite_url_option_is_named_at_once(tmp_path: Path) -> None:
    with pytest.raises(BackendURLError) as info:
        TaskManager(backend=f"sqlite:///{tmp_path}/tasks.db?prefx=x")
    assert "unknown option 'prefx'" in str(info.value)
    assert "table_prefix" in str(info.value) and "timeout" in str(info.value)
    TaskManager(backend=f"sqlite:///{tmp_path}/tasks.db?timeout=5&table_prefix=t_")


async def test_a_missing_sqlite_directory_says_so_and_not_server(tmp_path: Path) -> None:
    backend = SQLBackend(f"sqlite:///{tmp_path / 'no-such-dir' / 'tasks.db'}")
    with pytest.raises(BackendUnavailableError) as info:
        await backend.open()
    message = str(info.value)
    assert "no such directory" in message and "directory exists" in message
    assert "server" not in message


def test_the_repr_masks_the_password() -> None:
    backend = SQLBackend(f"postgresql://app:{SECRET}@db/app")
    assert SECRET not in repr(backend) and "app:***@<host>" in repr(backend)
