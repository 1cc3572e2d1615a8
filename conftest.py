"""How the suite is split over pytest-xdist workers: ``nox -s tests`` runs ``-n 3 --dist
loadgroup``, and with ``--dist loadgroup`` the groups below decide which tests share a worker.

* The timing-sensitive multi-process tests (several app processes racing, killed or
  outaged on purpose, schedules firing on real seconds) form one group: they run one
  after another on one worker, never next to each other, while the rest of the suite
  runs on the other workers. The SQL servers' conformance races (many connections at
  once) join that group.
* A module with a module-scoped fixture (a server, a browser page, a seeded store) is one
  group, so the fixture starts once.
* The tests on the self-started Redis Cluster form one group, so one cluster starts.
* Every other test is a unit of its own (as ``--dist load``).

xdist's own ``xdist_group`` marks cannot do this with pytest 9.2: pytest-xdist 3.8 groups
by appending ``@group`` to ``item._nodeid``, which pytest 9.2 no longer reads. So the
groups are computed here from each test's file, in a scheduler of our own. Groups are
scheduled biggest first (xdist's ``loadscopereorder``), so the long serial group starts at
once instead of becoming the tail. Without xdist this file changes nothing.
"""

from __future__ import annotations

import faulthandler
import os
import sys
from typing import Any

import pytest

SERIAL_GROUP = "timing-sensitive"
SERIAL_FILES = {
    "tests-integration/test_schedules_instances.py",
    "tests-integration/test_durability_crash.py",
    "tests-integration/test_durability_idempotency.py",
    "tests-integration/test_outages.py",
    "tests-integration/test_sql_concurrency.py",
    "tests-integration/test_redis_concurrency.py",
}
# The conformance races open many connections at once: beside the multi-process tests on
# another worker they could pass PostgreSQL's max_connections (100) -- "too many clients".
SQL_SERVER_CONFORMANCE = {
    "packages/taskflow-sql/tests/test_conformance_postgres.py",
    "packages/taskflow-sql/tests/test_conformance_mysql.py",
}
CLUSTER_FILES = {
    "packages/taskflow-redis/tests/test_cluster.py",
    "packages/taskflow-redis/tests/test_conformance_redis_cluster.py",
}
WHOLE_MODULE_FILES = {
    "tests-integration/test_admin_dashboard.py",
    "tests-integration/test_admin_schema.py",
    "packages/taskflow-redis/tests/test_clients.py",
}


def group_of(nodeid: str) -> str:
    """The scheduling unit of the test ``nodeid``: a group name, or the test itself."""
    path = nodeid.split("::", 1)[0]
    if path in SERIAL_FILES or (path in SQL_SERVER_CONFORMANCE and "::test_racing_" in nodeid):
        return SERIAL_GROUP
    if path in CLUSTER_FILES:
        return "redis-cluster"
    if path in WHOLE_MODULE_FILES:
        return path
    return nodeid


try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # pragma: no cover - the suite without pytest-xdist
    pass
else:

    class GroupScheduling(LoadScopeScheduling):  # type: ignore[misc]
        """``--dist load`` for single tests, whole groups for the tests in ``group_of``."""

        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
        if config.getvalue("dist") == "loadgroup":
            return GroupScheduling(config, log)
        return None


_REAL_STDERR = pytest.StashKey[int]()


def pytest_configure(config: pytest.Config) -> None:
    """Keep a copy of the process's stderr from before any test runs: while a test runs,
    pytest's capture puts a temporary file in its place, lost with a crashed process."""
    config.stash[_REAL_STDERR] = os.dup(sys.stderr.fileno())


def pytest_unconfigure(config: pytest.Config) -> None:
    os.close(config.stash[_REAL_STDERR])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    """A backstop behind pytest-timeout: a test still running at twice its timeout has a
    hang the timeout could not break (a thread a test left running that the event loop's
    shutdown waits for, a catch-all around a wait), so every thread's stack is printed and
    its process exits; pytest-xdist reports the test as crashed and carries on with a new
    worker, instead of the whole run stalling until CI gives up on it."""
    timeout = _timeout_of(item) if item.config.pluginmanager.hasplugin("timeout") else 0.0
    if timeout > 0:
        stderr = item.config.stash[_REAL_STDERR]
        faulthandler.dump_traceback_later(2 * timeout, exit=True, file=stderr)
    try:
        yield
    finally:
        if timeout > 0:
            faulthandler.cancel_dump_traceback_later()


def _timeout_of(item: pytest.Item) -> float:
    """The item's pytest-timeout limit: its ``timeout`` mark's, else the ini file's."""
    mark = item.get_closest_marker("timeout")
    if mark is not None and mark.args:
        return float(mark.args[0] or 0)
    return float(item.config.getini("timeout") or 0)
