"""``GET {path}/metrics``: Prometheus exposition from the store and this instance's events.

Each :class:`~fastapi_taskflow.admin.TaskAdmin` has its own ``CollectorRegistry``, so two
admins (or tests) never share series. At scrape time the route reads the store's counts
and the queue depths (shared by every instance: the same on all of them); the duration
histogram and the retry counter are fed by the lifecycle events of the tasks *this*
instance runs, so summing them over the instances Prometheus scrapes counts each task once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..events import LifecycleEvent, LogEvent
from ..models import TaskStats, TaskStatus

__all__ = ["CONTENT_TYPE", "AdminMetrics", "DURATION_BUCKETS"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format."""

DURATION_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)
"""Histogram bucket bounds for task run time, in seconds."""

_MAX_TRACKED: Final = 100_000


class _StoreCollector(Collector):
    """Gauges built from the last snapshot the metrics route fetched."""

    def __init__(self) -> None:
        self.stats = TaskStats()
        self.queues: dict[str, int] = {}

    def collect(self) -> Iterator[Metric]:
        tasks = GaugeMetricFamily(
            "taskflow_tasks",
            "Tasks in the store by function and status (every instance's).",
            labels=["func", "status"],
        )
        for func, per in sorted(self.stats.by_func.items()):
            for task_status, count in sorted(per.items(), key=lambda kv: kv[0].value):
                tasks.add_metric([func, TaskStatus(task_status).value], count)
        yield tasks
        total = GaugeMetricFamily(
            "taskflow_tasks_by_status", "Tasks in the store by status.", labels=["status"]
        )
        for task_status in TaskStatus:
            total.add_metric([task_status.value], self.stats.by_status.get(task_status, 0))
        yield total
        depth = GaugeMetricFamily(
            "taskflow_queue_depth", "Tasks waiting on each queue.", labels=["queue"]
        )
        for name, count in sorted(self.queues.items()):
            depth.add_metric([name], count)
        yield depth

    def describe(self) -> Iterable[Metric]:
        return []


class AdminMetrics:
    """One admin's Prometheus registry: store gauges, a duration histogram, retries."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._store = _StoreCollector()
        self.registry.register(self._store)
        self.durations = Histogram(
            "taskflow_task_duration_seconds",
            "Run time of the task attempts this instance finished.",
            labelnames=["func", "status"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.finished = Counter(
            "taskflow_tasks_finished",
            "Tasks this instance saw reach a final status.",
            labelnames=["func", "status"],
            registry=self.registry,
        )
        self.retries = Counter(
            "taskflow_task_retries",
            "Failed attempts this instance scheduled for a retry.",
            labelnames=["func"],
            registry=self.registry,
        )
        self._started: dict[str, float] = {}

    def snapshot(self, stats: TaskStats, queues: dict[str, int]) -> None:
        """Store what the next ``render()`` reports for the store and the queues."""
        self._store.stats = stats
        self._store.queues = queues

    def render(self) -> bytes:
        """The exposition text of everything in the registry."""
        return generate_latest(self.registry)

    # An Observer: the TaskManager hands it this instance's events.

    async def on_lifecycle(self, event: LifecycleEvent) -> None:
        """Time attempts from RUNNING to their end; count retries and final statuses."""
        stamp = event.timestamp.timestamp()
        if event.status is TaskStatus.RUNNING:
            if len(self._started) < _MAX_TRACKED:
                self._started[event.task_id] = stamp
            return
        started = self._started.pop(event.task_id, None)
        if event.status is TaskStatus.PENDING:
            if event.attempt > 0 and started is not None:
                self.durations.labels(event.func_name, "retried").observe(max(0.0, stamp - started))
                self.retries.labels(event.func_name).inc()
            return
        if started is not None:
            self.durations.labels(event.func_name, event.status.value).observe(
                max(0.0, stamp - started)
            )
        self.finished.labels(event.func_name, event.status.value).inc()

    async def on_log(self, event: LogEvent) -> None:
        """Log lines are not metrics."""
