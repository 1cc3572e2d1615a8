"""How the suite is split over pytest-xdist workers (``nox -s tests`` runs ``-n 3 --dist
loadgroup``); without xdist the marks below change nothing.

* The timing-sensitive multi-process tests (several app processes racing, killed or
  outaged on purpose, schedules firing on real seconds) share one group: they run one
  after another on one worker, never next to each other, while the rest of the suite
  runs on the other workers.
* A module with a module-scoped fixture (a server, a browser page, a seeded store) keeps
  its tests on one worker, so the fixture starts once.
* The tests on the self-started Redis Cluster share one worker, so one cluster starts.
"""

from __future__ import annotations

import pytest

SERIAL_GROUP = "timing-sensitive"
SERIAL_FILES = {
    "test_schedules_instances.py",
    "test_durability_crash.py",
    "test_durability_idempotency.py",
    "test_outages.py",
    "test_sql_concurrency.py",
    "test_redis_concurrency.py",
}
WHOLE_MODULE_FILES = {
    "test_admin_dashboard.py",
    "test_admin_schema.py",
    "test_clients.py",
}


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist registers this mark itself; registered here too for runs without it.
    config.addinivalue_line("markers", "xdist_group(name): run on the same xdist worker")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        name = item.path.name
        if name in SERIAL_FILES:
            group = SERIAL_GROUP
        elif "redis_cluster" in getattr(item, "fixturenames", ()):
            group = "redis-cluster"
        elif name in WHOLE_MODULE_FILES:
            group = f"{item.path.parent.name}/{name}"
        else:
            continue
        item.add_marker(pytest.mark.xdist_group(group))
