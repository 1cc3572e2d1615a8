"""What ``taskflow stats`` reports, computed by the store (never by loading tasks)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ..protocols import TaskBackend

__all__ = ["collect_stats"]


async def collect_stats(
    store: TaskBackend,
    *,
    now: datetime,
    window: timedelta,
    bucket_seconds: int,
    queues: list[str],
) -> dict[str, Any]:
    """Return the ``stats`` JSON: the admin API's ``/api/stats`` shape.

    ``{total, by_status, by_func, durations: {func: {count, p50, p95, p99}},
    throughput: [{bucket_start, succeeded, failed}], queues: {name: depth}}``.
    """
    counts = (await store.stats()).model_dump(mode="json")
    durations = await store.durations()
    buckets = await store.throughput(since=now - window, until=now, bucket_seconds=bucket_seconds)
    depths = {name: await store.queue_length(name) for name in dict.fromkeys(queues)}
    return {
        "total": counts["total"],
        "by_status": counts["by_status"],
        "by_func": counts["by_func"],
        "durations": {name: d.model_dump(mode="json") for name, d in durations.items()},
        "throughput": [b.model_dump(mode="json") for b in buckets],
        "queues": depths,
    }
