"""``taskflow check``: can this store be used, and is it the schema this release knows?"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..backends import open_backend
from ..clock import SystemClock
from ..errors import TaskflowError
from ..protocols import TaskBackend
from .connect import (
    SQL_SCHEMES,
    describe_missing,
    describe_newer,
    mask_url,
    schema_info,
    scheme_of,
    scrub,
)
from .errors import CLIError, ExitCode, exit_code_for

__all__ = ["Check", "Report", "render", "run_checks"]

REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})


@dataclass
class Check:
    """One verified property of the store."""

    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    """Every check run, in order; the first failure ends the run."""

    url: str
    checks: list[Check] = field(default_factory=list)
    exit_code: ExitCode = ExitCode.OK

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return all(c.ok for c in self.checks)

    def passed(self, name: str, detail: str) -> None:
        """Record a passed check."""
        self.checks.append(Check(name, True, detail))

    def failed(self, name: str, exc: BaseException) -> None:
        """Record a failed check and the exit status it means."""
        self.checks.append(Check(name, False, scrub(str(exc), self.url)))
        self.exit_code = exit_code_for(exc)

    def to_json(self) -> dict[str, Any]:
        """``{"ok", "backend": {"url", "scheme"}, "checks": [{"name", "ok", "detail"}]}``."""
        return {
            "ok": self.ok,
            "backend": {"url": mask_url(self.url), "scheme": scheme_of(self.url)},
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
        }


async def run_checks(url: str) -> Report:
    """Run the checks for ``url``; stops at the first failure."""
    report = Report(url)
    try:
        backend = open_backend(url, clock=SystemClock())
    except TaskflowError as exc:
        report.failed("backend package", exc)
        return report
    report.passed("backend package", f"{type(backend).__module__.split('.')[0]} is installed")
    scheme = scheme_of(url)
    if scheme in SQL_SCHEMES and not await _check_schema(report, url):
        return report
    if scheme in REDIS_SCHEMES and not await _check_redis(report, url):
        return report
    await _check_store(report, backend)
    return report


async def _check_schema(report: Report, url: str) -> bool:
    try:
        info = await schema_info(url)
    except (CLIError, TaskflowError) as exc:
        report.failed("connect", exc)
        return False
    report.passed("connect", f"{info.kind} database reachable")
    if info.found == 0:
        report.failed("schema", CLIError(ExitCode.UNAVAILABLE, describe_missing(info)))
        return False
    if info.found > info.expected:
        report.failed("schema", CLIError(ExitCode.UNAVAILABLE, describe_newer(info)))
        return False
    if info.found < info.expected:
        report.passed(
            "schema",
            f"version {info.found}, older than this release's {info.expected}: it is "
            "upgraded when an app (or a taskflow command) next opens it",
        )
    else:
        report.passed("schema", f"version {info.found} (current), table prefix {info.prefix!r}")
    return True


async def _check_redis(report: Report, url: str) -> bool:
    try:
        from taskflow_redis.urls import parse_redis_url
    except ImportError:  # pragma: no cover - open_backend failed first
        return True
    parsed = parse_redis_url(url)
    if parsed.cluster:
        return True  # the store check below opens the cluster client, which pings
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(parsed.url)
    try:
        await client.ping()
        info = await client.info("server")
    except Exception as exc:
        report.failed(
            "ping",
            CLIError(
                ExitCode.UNAVAILABLE,
                f"the Redis server does not answer: {type(exc).__name__}: {exc}. Check that "
                "it runs and the URL (host, port, password, database) is right.",
            ),
        )
        return False
    finally:
        close: Any = getattr(client, "aclose", None) or client.close  # redis 5.0.0: close
        await close()
    version = info.get("redis_version") or info.get("valkey_version") or "?"
    prefix = parsed.prefix or "taskflow"
    report.passed("ping", f"server answers (version {version}), key prefix {prefix!r}")
    return True


async def _check_store(report: Report, backend: TaskBackend) -> None:
    try:
        await backend.open()
        try:
            stats = await backend.stats()
        finally:
            await backend.close()
    except Exception as exc:
        report.failed("read", exc)
        return
    report.passed("read", f"{stats.total} task{'s' if stats.total != 1 else ''} stored")


def render(report: Report) -> RenderableType:
    """The human form: one line per check."""
    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for c in report.checks:
        mark = Text("ok", style="green") if c.ok else Text("FAIL", style="bold red")
        table.add_row(mark, c.name, Text(c.detail))
    head = Text(f"backend {mask_url(report.url)}")
    return Group(head, table)
