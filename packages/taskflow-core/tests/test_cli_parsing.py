"""The command line's own parsing: durations, times, URL masking, exit codes.

(The commands themselves run against real stores in tests-integration/test_cli.py.)
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from typer.testing import CliRunner

from fastapi_taskflow import (
    BackendUnavailableError,
    QueueFullError,
    RetryQueueFullError,
    TaskNotFoundError,
    TaskStateError,
)
from fastapi_taskflow.cli import ExitCode, app
from fastapi_taskflow.cli.connect import mask_url, scrub
from fastapi_taskflow.cli.durations import parse_duration, parse_moment
from fastapi_taskflow.cli.errors import CLIError, exit_code_for


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("12h", 43200),
        ("7d", 604800),
        ("2w", 1209600),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("45", 45),
        ("0s", 0),
        (" 7D ", 604800),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "7x", "d7", "7d3", "-1d", "1h 30m", "abc", "-5"])
def test_bad_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(CLIError) as caught:
        parse_duration(text, option="--older-than")
    assert caught.value.code is ExitCode.USAGE
    assert "--older-than" in str(caught.value)


def test_moments() -> None:
    now = datetime(2030, 6, 1, 12, tzinfo=timezone.utc)
    assert parse_moment("2h", now=now, option="--since") == now - timedelta(hours=2)
    assert parse_moment("2030-05-01", now=now, option="--since") == datetime(
        2030, 5, 1, tzinfo=timezone.utc
    )
    assert parse_moment("2030-05-01T10:00:00Z", now=now, option="--since") == datetime(
        2030, 5, 1, 10, tzinfo=timezone.utc
    )
    assert parse_moment("2030-05-01T12:00:00+02:00", now=now, option="--since") == datetime(
        2030, 5, 1, 10, tzinfo=timezone.utc
    )
    with pytest.raises(CLIError, match="--until: 'soon' is neither a duration"):
        parse_moment("soon", now=now, option="--until")


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("postgresql://bob:pw@db/app?schema=s", "postgresql://bob:***@db/app?schema=s"),
        ("mysql://bob@db/app", "mysql://bob@db/app"),
        ("sqlite:///tasks.db", "sqlite:///tasks.db"),
        ("redis://host/0?password=pw&prefix=p", "redis://host/0?password=***&prefix=p"),
        ("postgresql://u:p%40ss@db/app", "postgresql://u:***@db/app"),
        ("postgresql://u:p/s?s#1@db/app?token=t", "postgresql://u:***@db/app?token=***"),
        ("redis://:p/ss@host:6379/0", "redis://:***@host:6379/0"),
        ("mysql://root:p@ss@db/app", "mysql://root:***@db/app"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_scrub_removes_the_password_and_the_address_however_they_are_quoted() -> None:
    url = "postgresql://u:p%40ss@tasks-db/app?token=t0k3n"
    message = (
        f"could not use {url}: auth failed for p@ss / p%40ss (token t0k3n) "
        "on server 'tasks-db' at 10.1.2.3"
    )
    cleaned = scrub(message, url)
    assert "p@ss" not in cleaned and "p%40ss" not in cleaned and "t0k3n" not in cleaned
    assert "postgresql://u:***@<host>/app" in cleaned
    assert "tasks-db" not in cleaned and "10.1.2.3" not in cleaned
    assert "on server '<host>' at <host>" in cleaned


def test_exit_codes() -> None:
    assert exit_code_for(TaskNotFoundError("x")) is ExitCode.NOT_FOUND
    assert exit_code_for(TaskStateError("x", "running", "no")) is ExitCode.BAD_STATE
    assert exit_code_for(RetryQueueFullError("q", 1, "x", [])) is ExitCode.BAD_STATE
    assert exit_code_for(QueueFullError("q", 1, "x")) is ExitCode.BAD_STATE
    assert exit_code_for(BackendUnavailableError("down")) is ExitCode.UNAVAILABLE
    assert exit_code_for(RuntimeError("?")) is ExitCode.FAILURE
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 4, 5]


def test_memory_backend_is_refused_with_the_reason() -> None:
    result = CliRunner().invoke(app, ["list", "--backend", "memory://"])
    assert result.exit_code == ExitCode.USAGE
    assert "cannot see its tasks" in result.stderr


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("list", "show", "logs", "retry", "cancel", "purge", "stats", "watch", "check"):
        assert command in result.stdout
