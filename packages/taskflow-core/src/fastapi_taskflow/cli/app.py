"""The ``taskflow`` command: inspect and operate a shared task store from a shell.

Every command takes ``--backend URL`` (or ``TASKFLOW_BACKEND``) and ``--json``. Human
output is rich tables on stdout, messages and progress on stderr; ``--json`` prints one
JSON document (``watch``: one per line) with the shapes documented in docs/cli.md. Exit
statuses are :class:`~fastapi_taskflow.cli.errors.ExitCode`.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from ..clock import SystemClock
from ..errors import RetryQueueFullError
from ..models import TaskQuery, TaskStatus
from ..operations import cancel_task, get_task, purge_finished, retry_failed, retry_task
from ..protocols import TaskBackend
from . import check as check_module
from . import watch as watch_module
from .connect import open_store, resolve_url, scrub
from .durations import parse_duration, parse_moment
from .errors import CLIError, ExitCode, exit_code_for
from .follow import follow_logs
from .render import detail_view, logs_table, stats_view, tasks_table
from .shapes import log_json, task_detail, task_summary
from .stats import collect_stats

ACTOR = f"taskflow-cli@{socket.gethostname()}"
"""Who the task logs and events say retried or cancelled a task."""

__all__ = ["app", "main"]

T = TypeVar("T")

app = typer.Typer(
    name="taskflow",
    help=(
        "Inspect and operate taskflow tasks in a shared store (SQLite, PostgreSQL, "
        "MySQL/MariaDB, Redis). Point it at the store with --backend URL or "
        "TASKFLOW_BACKEND."
    ),
    no_args_is_help=True,
    add_completion=False,
    # Never print tracebacks with local variables: they could hold the backend URL.
    pretty_exceptions_enable=False,
)

# -- shared options -------------------------------------------------------------------

BackendOption = Annotated[
    str | None,
    typer.Option(
        "--backend",
        "-b",
        help="Backend URL, e.g. sqlite:///tasks.db or redis://host:6379/0 "
        "(default: $TASKFLOW_BACKEND).",
        show_default=False,
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
Status = Annotated[
    list[str] | None,
    typer.Option(
        "--status",
        "-s",
        help="Only tasks in this status (repeat, or comma-separate): pending, running, "
        "success, failed, interrupted, cancelled, rejected.",
        show_default=False,
    ),
]
Func = Annotated[str | None, typer.Option("--func", "-f", help="Only tasks of this function name.")]
QueueName = Annotated[str | None, typer.Option("--queue", help="Only tasks of this queue.")]
Tag = Annotated[
    list[str] | None,
    typer.Option("--tag", "-t", help="Only tasks tagged KEY=VALUE (repeat: all must match)."),
]
Since = Annotated[
    str | None,
    typer.Option(
        "--since", help="Created at or after: a duration ago (30m, 12h, 7d) or an ISO time."
    ),
]
Until = Annotated[
    str | None,
    typer.Option("--until", help="Created before: a duration ago (30m, 12h, 7d) or an ISO time."),
]
Search = Annotated[
    str | None,
    typer.Option(
        "--search", "-q", help="Text in the function name, id, error, or a tag key or value."
    ),
]


class Output:
    """Where a command's results and errors go."""

    def __init__(self, json_mode: bool) -> None:
        self.json = json_mode
        self.out = Console(highlight=False, width=_width(sys.stdout))
        self.err = Console(stderr=True, highlight=False, width=_width(sys.stderr))
        self.partial: dict[str, Any] = {}
        """What a failing command did before it failed, merged into the JSON error."""

    def data(self, value: Any) -> None:
        """Print one JSON document on stdout."""
        sys.stdout.write(json.dumps(value, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def result(self, value: Any, human: Any) -> None:
        """Print a command's result: ``value`` as JSON with ``--json``, else ``human``
        (text or a rich renderable) on stdout."""
        if self.json:
            self.data(value)
        else:
            self.out.print(human)

    def fail(self, exc: BaseException, url: str | None) -> NoReturn:
        """Report ``exc`` (password removed) and exit with its code."""
        code = exit_code_for(exc)
        message = scrub(_describe(exc), url) or type(exc).__name__
        if not isinstance(exc, CLIError) and code is ExitCode.FAILURE:
            message = f"{type(exc).__name__}: {message}"
        kind = exc.kind if isinstance(exc, CLIError) else code.name.lower()
        if self.json:
            error = {"code": int(code), "kind": kind, "message": message}
            self.data({**self.partial, "error": error})
        self.err.print(f"[bold red]error:[/] {_escape(message)}")
        raise typer.Exit(int(code))


_OPTION_OF_FIELD = {"q": "--search", "func_name": "--func", "tags": "--tag", "limit": "--limit"}


def _describe(exc: BaseException) -> str:
    """The message of ``exc``; a pydantic error as ``--option: what is wrong``."""
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{_OPTION_OF_FIELD.get(str(e['loc'][0]), e['loc'][0]) if e['loc'] else 'value'}: "
            f"{e['msg']}"
            for e in exc.errors()
        )
    return str(exc)


def _width(stream: Any) -> int | None:
    """A terminal's own width (or $COLUMNS); piped output gets wide lines (whole ids)."""
    isatty = getattr(stream, "isatty", None)
    if (isatty and isatty()) or os.environ.get("COLUMNS"):
        return None
    return 200


def _escape(text: str) -> str:
    return escape(text)


def _run(
    output: Output,
    backend_url: str | None,
    body: Callable[[str], Coroutine[Any, Any, T]],
) -> T:
    """Resolve the URL, run ``body(url)`` on an event loop, map errors to exit codes."""
    url: str | None = None
    try:
        url = resolve_url(backend_url)
        return asyncio.run(body(url))
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except Exception as exc:
        output.fail(exc, url or backend_url)


def _statuses(values: list[str] | None) -> list[TaskStatus] | None:
    if not values:
        return None
    found: list[TaskStatus] = []
    for value in values:
        for part in value.split(","):
            name = part.strip().lower()
            if not name:
                continue
            try:
                found.append(TaskStatus(name))
            except ValueError:
                valid = ", ".join(s.value for s in TaskStatus)
                raise CLIError(
                    ExitCode.USAGE, f"--status: unknown status {part!r}; use one of {valid}"
                ) from None
    return found or None


def _tags(values: list[str] | None) -> dict[str, str] | None:
    if not values:
        return None
    tags: dict[str, str] = {}
    for value in values:
        sep = "=" if "=" in value else ":"
        key, found, tag = value.partition(sep)
        if not found or not key:
            raise CLIError(ExitCode.USAGE, f"--tag: expected KEY=VALUE, got {value!r}")
        tags[key] = tag
    return tags


@dataclass(frozen=True)
class _Filters:
    """The filter options ``list`` and ``retry --all-failed`` share, as given."""

    status: list[str] | None
    func: str | None
    queue: str | None
    tag: list[str] | None
    since: str | None
    until: str | None
    search: str | None

    def given(self) -> bool:
        """True when any filter option was given."""
        return any(vars(self).values())

    def query(self, *, limit: int = 50, cursor: str | None = None) -> TaskQuery:
        """The store query of these filters (a bad value is a usage error)."""
        now = SystemClock().now()
        since, until = self.since, self.until
        return TaskQuery(
            statuses=_statuses(self.status),
            func_name=self.func,
            queue=self.queue,
            tags=_tags(self.tag),
            created_after=parse_moment(since, now=now, option="--since") if since else None,
            created_before=parse_moment(until, now=now, option="--until") if until else None,
            q=self.search or None,
            limit=limit,
            cursor=cursor,
        )


# -- commands -------------------------------------------------------------------------


@app.command("list")
def list_tasks(
    backend: BackendOption = None,
    json_: Json = False,
    status: Status = None,
    func: Func = None,
    queue: QueueName = None,
    tag: Tag = None,
    since: Since = None,
    until: Until = None,
    search: Search = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=1000, help="Tasks per page.")
    ] = 50,
    cursor: Annotated[
        str | None, typer.Option("--cursor", help="The next page (printed after a full page).")
    ] = None,
) -> None:
    """List tasks, newest first, with filters; one page at a time."""
    output = Output(json_)

    filters = _Filters(status, func, queue, tag, since, until, search)

    async def body(url: str) -> None:
        query = filters.query(limit=limit, cursor=cursor)
        async with open_store(url) as store:
            try:
                page = await store.query(query)
            except ValueError as exc:
                if cursor and "cursor" in str(exc):
                    raise CLIError(
                        ExitCode.USAGE, f"--cursor: {exc}; use the value a previous page printed"
                    ) from None
                raise
        if output.json:
            output.data(
                {"items": [task_summary(r) for r in page.items], "next_cursor": page.next_cursor}
            )
            return
        if not page.items:
            output.err.print("no tasks match")
            return
        output.out.print(tasks_table(page.items, width=output.out.width))
        if page.next_cursor:
            output.err.print(f"more: --cursor {page.next_cursor}")

    _run(output, backend, body)


@app.command()
def show(
    task_id: Annotated[str, typer.Argument(help="The task's id.")],
    backend: BackendOption = None,
    json_: Json = False,
) -> None:
    """Show one task: fields, arguments, result, error and logs."""
    output = Output(json_)

    async def body(url: str) -> None:
        async with open_store(url) as store:
            record = await get_task(store, task_id)
        output.result(task_detail(record), detail_view(record))

    _run(output, backend, body)


@app.command()
def logs(
    task_id: Annotated[str, typer.Argument(help="The task's id.")],
    backend: BackendOption = None,
    json_: Json = False,
    tail: Annotated[
        int | None, typer.Option("--tail", min=1, help="Only the last N lines.")
    ] = None,
    tracebacks: Annotated[
        bool,
        typer.Option("--tracebacks/--no-tracebacks", help="Show failed attempts' tracebacks."),
    ] = True,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-F",
            help="Keep printing new lines as the task writes them, until it finishes.",
        ),
    ] = False,
) -> None:
    """Print a task's log lines, oldest first (--follow: and new ones as they come)."""
    output = Output(json_)

    async def body(url: str) -> None:
        async with open_store(url) as store:
            if follow:
                await follow_logs(store, task_id, output, tail=tail, tracebacks=tracebacks)
                return
            record = await get_task(store, task_id)
        entries = record.logs[-tail:] if tail else record.logs
        if output.json:
            output.data([log_json(e) for e in entries])
        elif not entries:
            output.err.print(f"task {task_id} has no log lines")
        else:
            output.out.print(logs_table(entries, tracebacks=tracebacks))

    _run(output, backend, body)


@app.command()
def retry(
    task_id: Annotated[
        str | None, typer.Argument(help="The task to retry (or use --all-failed).")
    ] = None,
    backend: BackendOption = None,
    json_: Json = False,
    all_failed: Annotated[
        bool,
        typer.Option("--all-failed", help="Retry every FAILED task matching the filters."),
    ] = False,
    status: Status = None,
    func: Func = None,
    queue: QueueName = None,
    tag: Tag = None,
    since: Since = None,
    until: Until = None,
    search: Search = None,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=1, help="With --all-failed: at most N.")
    ] = None,
    max_queued: Annotated[
        int | None,
        typer.Option(
            "--max-queued",
            min=1,
            help="Stop when a task's queue already holds N waiting tasks.",
        ),
    ] = None,
) -> None:
    """Run a FAILED, INTERRUPTED or CANCELLED task again (same id, arguments, tags,
    queue and priority), or every failed task matching filters with --all-failed."""
    output = Output(json_)
    filters = _Filters(status, func, queue, tag, since, until, search)

    async def body(url: str) -> None:
        if all_failed == (task_id is not None):
            raise CLIError(
                ExitCode.USAGE, "give a task id or --all-failed (with filters), not both"
            )
        if task_id is not None and (filters.given() or limit):
            raise CLIError(
                ExitCode.USAGE, "filters (--status, --func, ...) go with --all-failed, not an id"
            )
        clock = SystemClock()
        if task_id is not None:
            async with open_store(url) as store:
                record = await retry_task(
                    store, task_id, clock=clock, max_queued=max_queued, actor=ACTOR
                )
            output.result(
                task_summary(record),
                f"task {record.task_id} is PENDING again on queue {record.queue!r}: an "
                f"instance that has {record.func_name!r} will run it",
            )
            return
        query = filters.query(limit=200)
        async with open_store(url) as store:
            try:
                ids = await retry_failed(
                    store, query, clock=clock, limit=limit, max_queued=max_queued, actor=ACTOR
                )
            except RetryQueueFullError as exc:
                output.partial = {"task_ids": exc.retried}
                if not output.json:
                    _print_ids(output, exc.retried)
                raise
        if output.json:
            output.data({"task_ids": ids})
        else:
            _print_ids(output, ids)

    _run(output, backend, body)


def _print_ids(output: Output, ids: list[str]) -> None:
    for task_id in ids:
        output.out.print(task_id)
    output.err.print(f"retried {len(ids)} task{'s' if len(ids) != 1 else ''}")


@app.command()
def cancel(
    task_id: Annotated[str, typer.Argument(help="The PENDING or RUNNING task to cancel.")],
    backend: BackendOption = None,
    json_: Json = False,
) -> None:
    """Cancel a task: a PENDING one never runs; a RUNNING one is stopped by the app
    instance running it and ends CANCELLED."""
    output = Output(json_)

    async def body(url: str) -> None:
        async with open_store(url) as store:
            record = await cancel_task(store, task_id, clock=SystemClock(), actor=ACTOR)
        output.result(
            task_summary(record),
            f"task {record.task_id} is RUNNING; cancellation requested, the instance running "
            "it stops it"
            if record.status is TaskStatus.RUNNING
            else f"task {record.task_id} is CANCELLED; it will not run",
        )

    _run(output, backend, body)


@app.command()
def purge(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            help="Delete tasks that finished longer ago than this: 30m, 12h, 7d, 2w.",
        ),
    ],
    backend: BackendOption = None,
    json_: Json = False,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=100_000, help="Tasks deleted per batch.")
    ] = 1000,
) -> None:
    """Delete finished tasks (and their logs) older than a duration; never active ones."""
    output = Output(json_)

    async def body(url: str) -> None:
        age = parse_duration(older_than, option="--older-than")
        async with open_store(url) as store:
            if output.json:
                purged = await purge_finished(
                    store, older_than=age, clock=SystemClock(), batch_size=batch_size
                )
            else:
                purged = await _purge_with_progress(output, store, age, batch_size)
        output.result(
            {"purged": purged}, f"purged {purged} finished task{'s' if purged != 1 else ''}"
        )

    _run(output, backend, body)


async def _purge_with_progress(
    output: Output, store: TaskBackend, age: timedelta, batch_size: int
) -> int:
    stats = await store.stats()
    finished = sum(n for s, n in stats.by_status.items() if TaskStatus(s).is_terminal)
    with Progress(
        SpinnerColumn(),
        TextColumn("purging finished tasks"),
        BarColumn(),
        TextColumn("{task.completed} deleted"),
        TimeElapsedColumn(),
        console=output.err,
        transient=False,
    ) as progress:
        # The bar's length is every finished task (an upper bound: the recent ones stay).
        bar = progress.add_task("purge", total=finished or None)
        return await purge_finished(
            store,
            older_than=age,
            clock=SystemClock(),
            batch_size=batch_size,
            progress=lambda n: progress.advance(bar, n),
        )


@app.command()
def stats(
    backend: BackendOption = None,
    json_: Json = False,
    queue: Annotated[
        list[str] | None,
        typer.Option("--queue", help="Report this queue's depth (repeat; default: default)."),
    ] = None,
    window: Annotated[
        str, typer.Option("--window", help="Throughput over this long ago until now.")
    ] = "1h",
    bucket: Annotated[str, typer.Option("--bucket", help="Throughput bucket width.")] = "5m",
) -> None:
    """Counts by status and function, run-time percentiles, throughput, queue depths."""
    output = Output(json_)

    async def body(url: str) -> None:
        span = parse_duration(window, option="--window")
        width = parse_duration(bucket, option="--bucket")
        if width.total_seconds() < 1:
            raise CLIError(ExitCode.USAGE, "--bucket must be at least 1s")
        async with open_store(url) as store:
            data = await collect_stats(
                store,
                now=SystemClock().now(),
                window=span,
                bucket_seconds=int(width.total_seconds()),
                queues=queue or ["default"],
            )
        output.result(data, stats_view(data))

    _run(output, backend, body)


@app.command()
def watch(
    backend: BackendOption = None,
    json_: Json = False,
    once: Annotated[
        bool, typer.Option("--once", help="Print one snapshot and exit (no live view).")
    ] = False,
    duration: Annotated[
        float | None,
        typer.Option("--duration", min=0, help="Stop after this many seconds (default: Ctrl-C)."),
    ] = None,
    recent: Annotated[int, typer.Option("--recent", min=1, max=200, help="Rows shown.")] = 15,
    refresh: Annotated[
        float, typer.Option("--refresh", min=0.1, help="Seconds between count refreshes.")
    ] = 2.0,
) -> None:
    """A live view of every instance's tasks: counts and recent events as they happen.

    With --json, prints one JSON object per line: first a snapshot
    ({"type": "snapshot", ...}), then every event as published.
    """
    output = Output(json_)

    async def body(url: str) -> None:
        async with open_store(url) as store:
            await watch_module.watch(
                store,
                output=output,
                once=once,
                duration=duration,
                recent=recent,
                refresh=refresh,
            )

    _run(output, backend, body)


@app.command()
def check(backend: BackendOption = None, json_: Json = False) -> None:
    """Connect to the store and verify it: reachable, taskflow's schema at a version this
    release understands (SQL), the server answering (Redis). Exit 0 only if all pass."""
    output = Output(json_)

    async def body(url: str) -> None:
        report = await check_module.run_checks(url)
        output.result(report.to_json(), check_module.render(report))
        if not report.ok:
            failed = next(c for c in report.checks if not c.ok)
            output.err.print(f"[bold red]error:[/] {_escape(scrub(failed.detail, url))}")
            raise typer.Exit(int(report.exit_code))

    _run(output, backend, body)


def main() -> None:
    """The ``taskflow`` console script."""
    app()
