"""The backend conformance suite, one mixin class per area.

:class:`BackendConformance` holds every standard test. While a backend is being
written, its author may subclass individual areas (``QueueTests``, ``LivenessTests`` ...)
instead; each needs only the ``backend`` fixture. A finished backend runs
:class:`BackendConformance`: the core contract is never optional.
"""

from __future__ import annotations

from ._base import ConformanceBase, create_task, make_record, new_id
from ._threads import RacingBase, contend
from .concurrency import ConcurrencyTests
from .events import EventTests, ReaderTests
from .group_write import GroupWriteTests
from .guard import GuardTests, find_unmarked_overrides, standard_tests
from .insights import DurationTests, TextSearchTests, ThroughputTests
from .key_taking import KeyTakingTests
from .lifecycle import LifecycleTests
from .limits import LimitTests
from .liveness import LivenessTests
from .locks import LockTests, ScheduleTests
from .logs import LogTests
from .queries import QueryTests
from .queues import QueueTests
from .stats_purge import PurgeTests, StatsTests
from .store_create import StoreCreateTests
from .transitions import TransitionTests

__all__ = [
    "BackendConformance",
    "ConcurrencyTests",
    "ConformanceBase",
    "DurationTests",
    "EventTests",
    "GroupWriteTests",
    "GuardTests",
    "KeyTakingTests",
    "LifecycleTests",
    "LimitTests",
    "LivenessTests",
    "LockTests",
    "LogTests",
    "PurgeTests",
    "QueryTests",
    "QueueTests",
    "RacingBase",
    "ReaderTests",
    "ScheduleTests",
    "StatsTests",
    "StoreCreateTests",
    "TextSearchTests",
    "ThroughputTests",
    "TransitionTests",
    "contend",
    "create_task",
    "find_unmarked_overrides",
    "make_record",
    "new_id",
    "standard_tests",
]


class BackendConformance(
    GuardTests,
    LifecycleTests,
    StoreCreateTests,
    TransitionTests,
    KeyTakingTests,
    GroupWriteTests,
    LogTests,
    QueryTests,
    TextSearchTests,
    StatsTests,
    DurationTests,
    ThroughputTests,
    PurgeTests,
    QueueTests,
    LivenessTests,
    LockTests,
    ScheduleTests,
    EventTests,
    ReaderTests,
    ConcurrencyTests,
    LimitTests,
):
    """Every standard test of the backend contract.

    Subclass it in your backend's tests and define one fixture, ``backend``: an async
    generator taking ``clock`` that builds a fresh, empty backend with ``clock=clock``,
    opens it, yields it and closes it. Opt out of a test only with
    ``@pytest.mark.xfail(reason=...)`` (see :mod:`fastapi_taskflow.testing.suite.guard`).
    """
