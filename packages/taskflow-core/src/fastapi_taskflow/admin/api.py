"""The JSON routes of the admin API, the event stream and the metrics endpoint.

:func:`api_routes` adds them to a router; :class:`~fastapi_taskflow.admin.TaskAdmin`
builds that router with its auth dependency, so every route here is guarded.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Coroutine, Iterator
from datetime import timedelta
from typing import Annotated, Any, Final

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from fastapi.routing import APIRoute

from .. import operations
from ..errors import (
    InvalidOperationError,
    RetryQueueFullError,
    TaskflowError,
    TaskNotFoundError,
    TaskStateError,
)
from ..manager import TaskManager
from ..models import TaskQuery, TaskRecord, TaskStatus, bucket_start
from .metrics import CONTENT_TYPE, AdminMetrics
from .schemas import (
    Attempt,
    DurationSummary,
    ErrorBody,
    Log,
    PurgeRequest,
    PurgeResult,
    RetryFailedRequest,
    RetryFailedResult,
    Stats,
    TaskDetail,
    TaskFilter,
    TaskList,
    TaskSummary,
    ThroughputPoint,
    Timestamp,
    attempts_of,
    detail_of,
    summary_of,
)
from .stream import event_stream

__all__ = ["AdminRoute", "api_routes", "parse_tags"]

_NOT_FOUND: Final[dict[int | str, dict[str, Any]]] = {
    404: {"model": ErrorBody, "description": "No task has this id"}
}
_CONFLICT: Final[dict[int | str, dict[str, Any]]] = {
    409: {"model": ErrorBody, "description": "The task's status does not allow this"}
}
_BAD: Final[dict[int | str, dict[str, Any]]] = {
    400: {"model": ErrorBody, "description": "A malformed cursor or tag filter"}
}
_SSE_DOC: Final[dict[int | str, dict[str, Any]]] = {
    200: {
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
        "description": (
            "Server-sent events: `event: lifecycle` (data: LifecycleMessage) and "
            "`event: log` (data: LogMessage), one task's change per message"
        ),
    }
}
_METRICS_DOC: Final[dict[int | str, dict[str, Any]]] = {
    200: {
        "content": {"text/plain": {"schema": {"type": "string"}}},
        "description": "Prometheus text exposition format",
    }
}
MAX_BUCKETS: Final = 1000


def _json_safe(value: Any) -> Any:
    """``value`` with what JSON cannot carry made into text: ``NaN`` and infinities
    (Python's JSON reader takes them) and strings holding a lone surrogate (``"\\ud800"``
    in JSON) become their written form."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {_json_safe(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_json_safe(item) for item in value)
    return value


class AdminRoute(APIRoute):
    """The route class of the admin's routes: a request it refuses (422) is answered
    even when the refused input cannot be written as JSON.

    FastAPI's 422 answer echoes each refused value; a body holding ``NaN``,
    ``Infinity``, ``1e400`` or a lone surrogate (all of which Python's JSON reader
    accepts) then failed to encode and the client got a 500. The errors are made
    JSON-safe (:func:`_json_safe`) and raised again, so the app's own handler for
    ``RequestValidationError``, if it has one, still writes the answer.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, with its validation errors made JSON-safe."""
        handler = super().get_route_handler()

        async def safe_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                raise RequestValidationError(
                    _json_safe(list(exc.errors())), body=_json_safe(exc.body)
                ) from exc

        return safe_handler


def parse_tags(pairs: list[str] | None) -> dict[str, str] | None:
    """Turn ``["key:value", ...]`` into a dict; a pair without ``:`` is a 400."""
    if not pairs:
        return None
    tags: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition(":")
        if not sep or not key:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                f"tag filter {pair!r} must look like key:value (for example tenant:acme)",
            )
        tags[key] = value
    return tags


def _query(
    f: TaskFilter, *, limit: int = 50, cursor: str | None = None, default: list[TaskStatus] | None
) -> TaskQuery:
    return TaskQuery(
        statuses=f.status or default,
        func_name=f.func or None,
        queue=f.queue or None,
        tags=parse_tags(f.tag),
        created_after=f.created_after,
        created_before=f.created_before,
        q=f.q or None,
        limit=limit,
        cursor=cursor or None,
    )


_STATUS_OF_ERROR: Final[tuple[tuple[type[TaskflowError], int], ...]] = (
    (TaskNotFoundError, status.HTTP_404_NOT_FOUND),
    (TaskStateError, status.HTTP_409_CONFLICT),
    (RetryQueueFullError, status.HTTP_409_CONFLICT),
    (InvalidOperationError, status.HTTP_400_BAD_REQUEST),
)


@contextlib.contextmanager
def _http_errors() -> Iterator[None]:
    """Turn an operation's refusal into its HTTP answer: an unknown id 404, a status that
    does not allow it (or a full queue) 409, a bad argument 400; others propagate."""
    try:
        yield
    except TaskflowError as exc:
        for kind, code in _STATUS_OF_ERROR:
            if isinstance(exc, kind):
                raise HTTPException(code, str(exc)) from exc
        raise


def api_routes(
    router: APIRouter,
    task_manager: TaskManager,
    *,
    display_args: bool,
    metrics: AdminMetrics,
) -> None:
    """Add every JSON route, the event stream and ``/metrics`` to ``router``."""
    tm = task_manager

    async def found(task_id: str) -> TaskRecord:
        """The task with its logs, or a 404."""
        record = await tm.store.aget(task_id)
        if record is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(TaskNotFoundError(task_id)))
        return record

    # Registered before the ``/api/tasks/{task_id}`` routes, so that path is this
    # route's (an OPTIONS request is answered with ``Allow: POST``).
    @router.post(
        "/api/tasks/retry-failed",
        response_model=RetryFailedResult,
        responses=_BAD | _CONFLICT,
        summary="Retry every failed task matching a filter",
    )
    async def retry_failed(body: RetryFailedRequest) -> RetryFailedResult:
        """Stops early (``stopped`` says why) when the queue's limit is reached."""
        query = _query(body, limit=200, default=[TaskStatus.FAILED])
        backend = await tm.opened_backend()
        limit = tm.queue_limit(query.queue) if query.queue else None
        with _http_errors():
            try:
                ids = await operations.retry_failed(
                    backend, query, clock=tm.clock, max_queued=limit, actor=_actor(tm)
                )
            except RetryQueueFullError as exc:
                return RetryFailedResult(task_ids=exc.retried, stopped=str(exc))
        return RetryFailedResult(task_ids=ids)

    @router.get(
        "/api/tasks",
        response_model=TaskList,
        responses=_BAD,
        summary="List tasks (filters, text search, keyset pagination)",
    )
    async def list_tasks(
        status_: Annotated[list[TaskStatus] | None, Query(alias="status")] = None,
        func: Annotated[str | None, Query(max_length=255)] = None,
        queue: Annotated[str | None, Query(max_length=255)] = None,
        tag: Annotated[list[str] | None, Query(description="key:value, repeatable")] = None,
        created_after: Timestamp | None = None,
        created_before: Timestamp | None = None,
        q: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        cursor: Annotated[str | None, Query(max_length=2000)] = None,
    ) -> TaskList:
        """Newest first. Pass ``next_cursor`` back as ``cursor`` for the next page."""
        f = TaskFilter(
            status=status_,
            func=func,
            queue=queue,
            tag=tag,
            created_after=created_after,
            created_before=created_before,
            q=q,
        )
        query = _query(f, limit=limit, cursor=cursor, default=None)
        backend = await tm.opened_backend()
        try:
            page = await backend.query(query)
        except ValueError as exc:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                "malformed cursor: pass the next_cursor of the previous page unchanged",
            ) from exc
        return TaskList(items=[summary_of(r) for r in page.items], next_cursor=page.next_cursor)

    @router.get(
        "/api/tasks/{task_id}",
        response_model=TaskDetail,
        responses=_NOT_FOUND,
        summary="One task with its logs and attempts",
    )
    async def get_task(task_id: str) -> TaskDetail:
        """Arguments and result are null unless the admin was built with display_args."""
        return detail_of(await found(task_id), display_args=display_args)

    @router.get(
        "/api/tasks/{task_id}/logs",
        response_model=list[Log],
        responses=_NOT_FOUND,
        summary="A task's log lines, oldest first",
    )
    async def get_logs(task_id: str) -> list[Log]:
        """Every log line the task (and the engine, about it) wrote."""
        return detail_of(await found(task_id), display_args=False).logs

    @router.get(
        "/api/tasks/{task_id}/attempts",
        response_model=list[Attempt],
        responses=_NOT_FOUND,
        summary="Every attempt of a task, with its error and traceback",
    )
    async def get_attempts(task_id: str) -> list[Attempt]:
        """Attempts in order; a failed one carries its error and traceback."""
        return attempts_of(await found(task_id))

    @router.get("/api/stats", response_model=Stats, summary="Counts, durations, throughput")
    async def stats(
        window_seconds: Annotated[int, Query(ge=60, le=30 * 86400)] = 3600,
        bucket_seconds: Annotated[int, Query(ge=1, le=86400)] = 60,
    ) -> Stats:
        """Everything computed by the store: no task is loaded into Python."""
        if window_seconds // bucket_seconds > MAX_BUCKETS:
            bucket_seconds = -(-window_seconds // MAX_BUCKETS)
        backend = await tm.opened_backend()
        now = tm.clock.now()
        until = bucket_start(now, bucket_seconds) + timedelta(seconds=bucket_seconds)
        since = until - timedelta(seconds=bucket_seconds * -(-window_seconds // bucket_seconds))
        counts = await backend.stats()
        durations = await backend.durations()
        buckets = await backend.throughput(since=since, until=until, bucket_seconds=bucket_seconds)
        queues = await _queue_depths(tm)
        found = {b.bucket_start: b for b in buckets}
        points = []
        start = since
        while start < until:
            b = found.get(start)
            points.append(
                ThroughputPoint(
                    bucket_start=start,
                    succeeded=b.succeeded if b else 0,
                    failed=b.failed if b else 0,
                )
            )
            start += timedelta(seconds=bucket_seconds)
        return Stats(
            total=counts.total,
            by_status={TaskStatus(s).value: n for s, n in counts.by_status.items()},
            by_func={
                func: {TaskStatus(s).value: n for s, n in per.items()}
                for func, per in counts.by_func.items()
            },
            durations={
                func: DurationSummary(count=d.count, p50=d.p50, p95=d.p95, p99=d.p99)
                for func, d in durations.items()
            },
            throughput=points,
            bucket_seconds=bucket_seconds,
            queues=queues,
        )

    @router.get(
        "/api/events",
        response_class=StreamingResponse,
        responses=_SSE_DOC,
        summary="Live task events (server-sent events)",
    )
    async def events() -> StreamingResponse:
        """Lifecycle and log events of every instance, one change per message."""
        return StreamingResponse(
            event_stream(tm),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @router.post(
        "/api/tasks/{task_id}/retry",
        response_model=TaskSummary,
        responses=_NOT_FOUND | _CONFLICT,
        summary="Run a FAILED, INTERRUPTED or CANCELLED task again",
    )
    async def retry(task_id: str) -> TaskSummary:
        """The same task id becomes PENDING; arguments, tags, queue, priority are kept."""
        backend = await tm.opened_backend()
        record = await backend.get(task_id)
        limit = tm.queue_limit(record.queue) if record is not None else None
        with _http_errors():
            done = await operations.retry_task(
                backend, task_id, clock=tm.clock, max_queued=limit, actor=_actor(tm)
            )
        return summary_of(done)

    @router.post(
        "/api/tasks/{task_id}/cancel",
        response_model=TaskSummary,
        responses=_NOT_FOUND | _CONFLICT,
        summary="Cancel a PENDING or RUNNING task",
    )
    async def cancel(task_id: str) -> TaskSummary:
        """As ``task_manager.cancel()``: a PENDING task becomes CANCELLED and never
        starts; a RUNNING one is stopped where it runs and ends CANCELLED (the answer is
        then still ``running``). A CANCELLED task is returned unchanged; one that ended
        otherwise is a 409."""
        with _http_errors():
            done = await tm.cancel(task_id)
        return summary_of(done)

    @router.post(
        "/api/purge",
        response_model=PurgeResult,
        responses=_BAD,
        summary="Delete finished tasks older than a duration",
    )
    async def purge(body: PurgeRequest) -> PurgeResult:
        """Active tasks are never deleted."""
        backend = await tm.opened_backend()
        with _http_errors():
            n = await operations.purge_finished(
                backend, older_than=timedelta(seconds=body.older_than_seconds), clock=tm.clock
            )
        return PurgeResult(purged=n)

    @router.get(
        "/metrics",
        response_class=Response,
        responses=_METRICS_DOC,
        summary="Prometheus metrics",
    )
    async def prometheus() -> Response:
        """Tasks by status and function, queue depths, durations and retries."""
        backend = await tm.opened_backend()
        metrics.snapshot(await backend.stats(), await _queue_depths(tm))
        return Response(metrics.render(), media_type=CONTENT_TYPE)


def _actor(tm: TaskManager) -> str:
    return f"admin@{tm.instance_id}"


async def _queue_depths(tm: TaskManager) -> dict[str, int]:
    backend = await tm.opened_backend()
    return {name: await backend.queue_length(name) for name in sorted(tm.queue_names())}
