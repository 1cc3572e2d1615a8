"""Human output: rich tables and panels for each command."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..isotime import parse_iso
from ..models import LogEntry, TaskRecord, TaskStatus

__all__ = [
    "STATUS_STYLES",
    "detail_view",
    "logs_table",
    "stats_view",
    "status_text",
    "tasks_table",
    "when",
]

STATUS_STYLES = {
    TaskStatus.PENDING: "yellow",
    TaskStatus.RUNNING: "cyan",
    TaskStatus.SUCCESS: "green",
    TaskStatus.FAILED: "bold red",
    TaskStatus.INTERRUPTED: "magenta",
    TaskStatus.CANCELLED: "dim",
    TaskStatus.REJECTED: "red",
}
_LEVEL_STYLES = {"error": "red", "warning": "yellow", "debug": "dim"}


def when(moment: datetime | None) -> str:
    """A UTC time as ``2026-11-25 12:00:01`` ('' for None)."""
    if moment is None:
        return ""
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def status_text(status: TaskStatus | str) -> Text:
    """The status, upper-case, in its colour."""
    value = TaskStatus(status)
    return Text(value.value.upper(), style=STATUS_STYLES.get(value, ""))


def _duration(record: TaskRecord) -> str:
    if record.started_at is None or record.finished_at is None:
        return ""
    return f"{(record.finished_at - record.started_at).total_seconds():.3f}s"


def _tags(tags: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in tags.items())


def tasks_table(
    records: Iterable[TaskRecord],
    *,
    title: str | None = None,
    width: int | None = None,
    compact: bool = False,
) -> Table:
    """The task list: id, function, status, queue, attempt, created, duration, tags,
    error.

    Ids are never cut. Within ``width`` (a terminal's), the function name and the error
    are shortened and queue and tags left out when they do not fit; ``compact`` always
    leaves queue and tags out (the live view).
    """
    rows = list(records)
    func_width = min(30, max([8, *(len(r.func_name) for r in rows)]))
    fixed = 36 + func_width + 11 + 3 + 19 + 8  # id, function, status, att, created, took
    spare = None if width is None else width - fixed - 3 * 7  # 3: column padding
    extras = not compact and (spare is None or spare >= 60)
    if spare is not None and extras:
        spare -= 3 * 2 + 12 + 20  # queue, tags
    error_width = 40 if spare is None else max(10, min(60, spare))
    table = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("ID", no_wrap=True, min_width=36)
    table.add_column("FUNCTION", no_wrap=True, overflow="ellipsis", max_width=func_width)
    table.add_column("STATUS", no_wrap=True)
    if extras:
        table.add_column("QUEUE", no_wrap=True, overflow="ellipsis", max_width=12)
    table.add_column("ATT", justify="right", no_wrap=True)
    table.add_column("CREATED (UTC)", no_wrap=True)
    table.add_column("TOOK", justify="right", no_wrap=True)
    if extras:
        table.add_column("TAGS", no_wrap=True, overflow="ellipsis", max_width=20)
    table.add_column("ERROR", no_wrap=True, overflow="ellipsis", max_width=error_width)
    for r in rows:
        cells: list[Text | str] = [Text(r.task_id), Text(r.func_name), status_text(r.status)]
        if extras:
            cells.append(Text(r.queue))
        cells += [str(r.attempt), when(r.created_at), _duration(r)]
        if extras:
            cells.append(Text(_tags(r.tags)))
        cells.append(Text(r.error or ""))
        table.add_row(*cells)
    return table


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, default=str, ensure_ascii=False)


def logs_table(entries: Iterable[LogEntry], *, tracebacks: bool = True) -> Table:
    """A task's log lines, oldest first; failed attempts' tracebacks under their line."""
    table = Table(header_style="bold", show_lines=False)
    table.add_column("TIME (UTC)", no_wrap=True)
    table.add_column("LEVEL", no_wrap=True)
    table.add_column("ATT", justify="right")
    table.add_column("MESSAGE", overflow="fold")
    for entry in entries:
        message = Text(entry.message)
        trace = entry.extra.get("traceback") if tracebacks else None
        if isinstance(trace, str) and trace:
            message.append("\n" + trace.rstrip(), style="dim")
        table.add_row(
            when(entry.timestamp) + f".{entry.timestamp.microsecond // 1000:03d}",
            Text(entry.level, style=_LEVEL_STYLES.get(entry.level, "")),
            str(entry.attempt),
            message,
        )
    return table


def detail_view(record: TaskRecord) -> RenderableType:
    """One task: its fields, arguments, result, error and logs."""
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold", no_wrap=True)
    fields.add_column(overflow="fold")
    rows: list[tuple[str, Text | str]] = [
        ("id", Text(record.task_id)),
        ("function", Text(record.func_name)),
        ("status", status_text(record.status)),
        ("queue", Text(f"{record.queue} (priority {record.priority})")),
        ("attempt", f"{record.attempt} (retries allowed: {record.max_retries})"),
        ("tags", Text(_tags(record.tags) or "-")),
        ("idempotency key", Text(record.idempotency_key or "-")),
        ("created", when(record.created_at)),
        ("updated", when(record.updated_at)),
        ("started", when(record.started_at) or "-"),
        ("finished", when(record.finished_at) or "-"),
        ("took", _duration(record) or "-"),
        ("owner", Text(record.owner or "-")),
    ]
    if record.progress is not None:
        rows.append(("progress", f"{record.progress:.0%}"))
    if record.error:
        rows.append(("error", Text(record.error, style="red")))
    for name, value in rows:
        fields.add_row(name, value)
    parts: list[RenderableType] = [fields]
    arguments = {"args": record.args, "kwargs": record.kwargs}
    parts.append(
        Panel(Text(_pretty(arguments)), title="arguments", title_align="left", expand=False)
    )
    if record.result is not None:
        parts.append(
            Panel(Text(_pretty(record.result)), title="result", title_align="left", expand=False)
        )
    if record.logs:
        parts.append(Panel(logs_table(record.logs), title="logs", title_align="left", expand=False))
    return Group(*parts)


def stats_view(data: Mapping[str, Any]) -> RenderableType:
    """``stats``: counts by status, per function, durations, throughput, queue depths."""
    parts: list[RenderableType] = []
    by_status = Table(title=f"{data['total']} tasks", header_style="bold")
    statuses = list(TaskStatus)
    for status in statuses:
        by_status.add_column(status_text(status), justify="right")
    by_status.add_row(*(str(data["by_status"].get(s.value, 0)) for s in statuses))
    parts.append(by_status)
    if data["by_func"]:
        funcs = Table(title="by function", header_style="bold")
        funcs.add_column("FUNCTION", overflow="fold")
        # Only the statuses some function has, so the table fits a terminal.
        statuses = [s for s in TaskStatus if any(c.get(s.value) for c in data["by_func"].values())]
        for status in statuses:
            funcs.add_column(status_text(status), justify="right")
        funcs.add_column("p50", justify="right")
        funcs.add_column("p95", justify="right")
        funcs.add_column("p99", justify="right")
        for name, counts in sorted(data["by_func"].items()):
            d = data["durations"].get(name)
            took = [f"{d[p]:.3f}s" for p in ("p50", "p95", "p99")] if d else ["", "", ""]
            funcs.add_row(Text(name), *(str(counts.get(s.value, 0)) for s in statuses), *took)
        parts.append(funcs)
    if data["throughput"]:
        flow = Table(title="finished per bucket", header_style="bold")
        flow.add_column("BUCKET START (UTC)")
        flow.add_column("SUCCEEDED", justify="right")
        flow.add_column("FAILED", justify="right")
        for bucket in data["throughput"]:
            start = parse_iso(bucket["bucket_start"])
            flow.add_row(when(start), str(bucket["succeeded"]), str(bucket["failed"]))
        parts.append(flow)
    queues = Table(title="queues (waiting)", header_style="bold")
    queues.add_column("QUEUE")
    queues.add_column("DEPTH", justify="right")
    for name, depth in data["queues"].items():
        queues.add_row(Text(name), str(depth))
    parts.append(queues)
    return Group(*parts)
