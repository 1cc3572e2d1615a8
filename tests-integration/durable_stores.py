"""The durable backends a reliability test runs on, each isolated on its real server.

``durable_url`` (a fixture in the tests that use it) is one of :data:`DURABLE`, with
``{tmp}`` and ``{uid}`` filled in; ``refuse_pending(backend, marker)`` makes the real
server itself refuse to store a PENDING task whose function name contains ``marker``
(a CHECK constraint, or a trigger on SQLite), to test what taskflow does when a store
refuses one record.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import _drop_isolated, require_reachable

POSTGRES = os.environ.get("TASKFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL = os.environ.get("TASKFLOW_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
REDIS = os.environ.get("TASKFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

DURABLE = {
    "sqlite": "sqlite:///{tmp}/tasks.db",
    "postgres": POSTGRES + "?schema=rel_{uid}",
    "mysql": MYSQL + "?table_prefix=r{uid}_",
    "redis": REDIS + "?prefix=rel{uid}",
}
SQL = ("sqlite", "postgres", "mysql")


def isolated_url(name: str, tmp_path: Path) -> Iterator[str]:
    """Yield the URL of backend ``name`` under a fresh prefix/schema; clean up after."""
    uid = uuid.uuid4().hex[:12]
    url = DURABLE[name].replace("{tmp}", str(tmp_path)).replace("{uid}", uid)
    require_reachable(url)
    yield url
    if uid in url:
        _drop_isolated(url, uid)


@pytest.fixture(params=["memory", *DURABLE])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fixture: ``memory://``, then each durable backend isolated on its real server
    (import it into a test module to use it)."""
    if request.param == "memory":
        yield "memory://"
    else:
        yield from isolated_url(request.param, tmp_path)


async def refuse_pending(backend: object, marker: str) -> None:
    """Make the SQL server refuse PENDING rows whose ``func_name`` contains ``marker``."""
    await refuse_status(backend, marker, "pending")


async def refuse_status(backend: object, marker: str, status: str) -> None:
    """Make the SQL server refuse to store a task whose ``func_name`` contains
    ``marker`` with ``status`` (on insert and on update)."""
    from sqlalchemy import text

    tables = backend.tables  # type: ignore[attr-defined]
    engine = backend.engine  # type: ignore[attr-defined]
    name = tables.tasks.fullname
    rule = f"{tables.prefix}refuse_{marker}_{status}"
    async with engine.begin() as conn:
        if backend.kind == "sqlite":  # type: ignore[attr-defined]
            for event in ("INSERT", "UPDATE"):
                await conn.execute(
                    text(
                        f"CREATE TRIGGER {rule}_{event.lower()} BEFORE {event} ON {name} "
                        f"WHEN NEW.func_name LIKE '%{marker}%' AND NEW.status = '{status}' "
                        "BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END"
                    )
                )
        else:
            await conn.execute(
                text(
                    f"ALTER TABLE {name} ADD CONSTRAINT {rule} "
                    f"CHECK (NOT (func_name LIKE '%{marker}%' AND status = '{status}'))"
                )
            )
