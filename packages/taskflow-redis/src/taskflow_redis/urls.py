"""Parsing and checking ``redis://``, ``rediss://`` and ``unix://`` backend URLs.

Besides everything redis-py understands (``redis://user:pass@host:6379/0?socket_timeout=5``),
a URL may carry taskflow's own query parameters, which are removed before the URL reaches
redis-py:

* ``prefix=NAME`` — the key namespace (default ``taskflow``);
* ``cluster=true`` — connect with the Redis Cluster client;
* ``retention=SECONDS`` — how long finished tasks are kept (``none`` keeps them forever).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

from redis.asyncio.connection import ConnectionPool
from redis.connection import URL_QUERY_ARGUMENT_PARSERS

from fastapi_taskflow.errors import BackendURLError
from fastapi_taskflow.redaction import hide_hosts_of, mask_secrets

__all__ = ["SCHEMES", "RedisURL", "parse_redis_url", "redact"]

SCHEMES = ("redis", "rediss", "unix")
"""The URL schemes this package registers."""

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_EXAMPLES = "for example 'redis://localhost:6379/0' or 'unix:///run/redis.sock?db=0'"


@dataclass(frozen=True)
class RedisURL:
    """A checked backend URL.

    Attributes:
        url: the URL for redis-py, taskflow's own parameters removed.
        cluster: True to use the Redis Cluster client.
        prefix: the key prefix from ``?prefix=``, or None.
        retention: seconds from ``?retention=``; None when absent; ``-1.0`` for ``none``.
    """

    url: str
    cluster: bool = False
    prefix: str | None = None
    retention: float | None = None


_TASKFLOW_OPTIONS = ("prefix", "cluster", "retention")
_UNEXPECTED_KEYWORD = re.compile(r"unexpected keyword argument '(?P<name>[^']+)'")


def redact(url: str) -> str:
    """Return ``url`` with its password and host masked (query kept, secrets in it
    masked), for messages; see :func:`fastapi_taskflow.redaction.mask_secrets`."""
    return mask_secrets(url)


def _fail(url: str, why: str) -> BackendURLError:
    return BackendURLError(f"malformed Redis backend URL {redact(url)!r}: {why}; {_EXAMPLES}")


def parse_redis_url(url: str) -> RedisURL:
    """Check ``url`` and split off taskflow's query parameters.

    Raises:
        BackendURLError: the scheme, host, port, database or a query parameter is wrong.
    """
    if not isinstance(url, str) or "://" not in url:
        raise _fail(str(url), "expected 'scheme://...'")
    hide_hosts_of(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _fail(url, str(exc)) from exc
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise _fail(url, f"the scheme must be one of {', '.join(s + '://' for s in SCHEMES)}")
    if scheme == "unix":
        if not parts.path:
            raise _fail(url, "a unix:// URL needs the socket path, as in unix:///run/redis.sock")
    else:
        if port == 0:
            raise _fail(url, "the port must be between 1 and 65535")
        db = parts.path.lstrip("/")
        if db and not db.isdigit():
            raise _fail(url, f"the database after the host must be a number, not {db!r}")
    cluster, prefix, retention = False, None, None
    rest: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "cluster":
            if value.lower() not in _TRUE | _FALSE:
                raise _fail(url, f"cluster={value!r} is neither true nor false")
            cluster = value.lower() in _TRUE
        elif name == "prefix":
            if not value or "{" in value or "}" in value:
                raise _fail(url, "prefix= must be a non-empty name without braces")
            prefix = value
        elif name == "retention":
            retention = _retention(url, value)
        else:
            rest.append((name, value))
    clean = f"{parts.scheme}://{parts.netloc}{parts.path}" + (f"?{urlencode(rest)}" if rest else "")
    _check_with_redis_py(url, clean)
    if cluster and scheme == "unix":
        raise _fail(url, "Redis Cluster is reached over TCP; use redis:// or rediss://")
    if cluster and parts.path.lstrip("/") not in ("", "0"):
        raise _fail(url, "Redis Cluster has only database 0")
    return RedisURL(url=clean, cluster=cluster, prefix=prefix, retention=retention)


def _retention(url: str, value: str) -> float:
    if value.lower() in ("none", "forever"):
        return -1.0
    try:
        seconds = float(value)
    except ValueError:
        raise _fail(url, f"retention={value!r} is not a number of seconds or 'none'") from None
    if seconds <= 0:
        raise _fail(url, "retention= must be a positive number of seconds, or 'none'")
    return seconds


def _check_with_redis_py(url: str, clean: str) -> None:
    """Let redis-py parse the URL and build (not connect) a connection object."""
    try:
        pool = ConnectionPool.from_url(clean)
        pool.make_connection()  # type: ignore[no-untyped-call]
    except (ValueError, TypeError) as exc:
        unknown = _UNEXPECTED_KEYWORD.search(str(exc))
        if unknown is None:
            raise _fail(url, mask_secrets(str(exc))) from exc
        raise _fail(
            url,
            f"unknown option {unknown['name']!r}: taskflow's own options are "
            f"{', '.join(_TASKFLOW_OPTIONS)}; redis-py's are "
            f"{', '.join(sorted(URL_QUERY_ARGUMENT_PARSERS))}",
        ) from exc
