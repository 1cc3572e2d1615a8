"""URLs: the entry points, taskflow's own query parameters and malformed URLs."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fastapi_taskflow.backends import open_backend
from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.errors import BackendURLError
from taskflow_redis import DEFAULT_RETENTION, RedisBackend
from taskflow_redis.urls import parse_redis_url


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "rediss://user:secret@cache.example.com:6380/2?ssl_cert_reqs=none",
        "unix:///run/redis/redis.sock?db=3",
        "redis://localhost?cluster=true",
    ],
)
def test_every_scheme_is_found_through_the_entry_point(url: str) -> None:
    backend = open_backend(url, clock=ManualClock())
    assert isinstance(backend, RedisBackend)
    assert backend.durable is True
    assert backend.prefix == "taskflow"
    assert backend.retention == DEFAULT_RETENTION


def test_taskflow_parameters_are_read_and_removed_from_the_url() -> None:
    parsed = parse_redis_url("redis://h:6379/1?prefix=shop&retention=3600&socket_timeout=5")
    assert parsed.prefix == "shop"
    assert parsed.retention == 3600.0
    assert parsed.url == "redis://h:6379/1?socket_timeout=5"
    backend = open_backend("redis://h/0?prefix=shop&retention=3600", clock=ManualClock())
    assert isinstance(backend, RedisBackend)
    assert backend.prefix == "shop"
    assert backend.retention == timedelta(hours=1)


def test_retention_none_keeps_finished_tasks() -> None:
    backend = RedisBackend("redis://h/0?retention=none")
    assert backend.retention is None


def test_explicit_arguments_win_over_the_url() -> None:
    backend = RedisBackend("redis://h/0?prefix=a&retention=5", prefix="b", retention=None)
    assert backend.prefix == "b"
    assert backend.retention is None


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("redis:/localhost", "scheme://"),
        ("redis://localhost:notaport/0", "Port"),
        ("redis://localhost:99999/0", "Port"),
        ("redis://localhost/zero", "database"),
        ("unix://", "socket path"),
        ("redis://localhost/0?cluster=maybe", "cluster"),
        ("redis://localhost/2?cluster=true", "only database 0"),
        ("unix:///tmp/r.sock?cluster=true", "TCP"),
        ("redis://localhost/0?prefix={x}", "braces"),
        ("redis://localhost/0?retention=soon", "retention"),
        ("redis://localhost/0?retention=0", "positive"),
        ("redis://localhost/0?socket_timeout=abc", "socket_timeout"),
        ("redis://localhost/0?no_such_option=1", "no_such_option"),
    ],
)
def test_malformed_urls_raise_backend_url_error(url: str, fragment: str) -> None:
    with pytest.raises(BackendURLError, match="malformed Redis backend URL") as info:
        RedisBackend(url)
    assert fragment in str(info.value)


def test_the_password_never_appears_in_an_error() -> None:
    with pytest.raises(BackendURLError) as info:
        open_backend("redis://admin:hunter2@localhost:bad/0", clock=ManualClock())
    assert "hunter2" not in str(info.value)
    assert "admin:***@<host>" in str(info.value)


def test_only_one_connection_source() -> None:
    from redis.asyncio import ConnectionPool

    pool = ConnectionPool.from_url("redis://localhost")
    with pytest.raises(ValueError, match="only one"):
        RedisBackend("redis://localhost", connection_pool=pool)


@pytest.mark.parametrize("prefix", ["a{b}", "}"])
def test_prefix_with_braces_is_refused(prefix: str) -> None:
    """A TaskflowError (and still a ValueError) naming the fix, as the URL's is."""
    with pytest.raises(BackendURLError, match="without braces"):
        RedisBackend("redis://localhost", prefix=prefix)


def test_an_unknown_option_is_named_with_the_valid_ones_and_the_query_kept() -> None:
    with pytest.raises(BackendURLError) as info:
        RedisBackend("redis://:hunter2@localhost:6379/0?prefx=x")
    message = str(info.value)
    assert "unknown option 'prefx'" in message
    assert "'redis://:***@<host>:6379/0?prefx=x'" in message
    assert "prefix, cluster, retention" in message and "socket_timeout" in message
    assert "hunter2" not in message and "unexpected keyword" not in message


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"url": "redis://localhost/0", "connection_pool": object()}, "only one of"),
        ({"url": "redis://localhost/0", "retention": 0}, "retention must be positive"),
        ({"url": "redis://localhost/0", "retention": timedelta(seconds=-1)}, "positive"),
    ],
)
def test_bad_constructor_arguments_raise_backend_url_error(
    kwargs: dict[str, object], fragment: str
) -> None:
    """As SQLBackend's do: a TaskflowError (and still a ValueError) naming the fix."""
    with pytest.raises(BackendURLError, match=fragment):
        RedisBackend(**kwargs)  # type: ignore[arg-type]
