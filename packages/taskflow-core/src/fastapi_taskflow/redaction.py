"""Keeping secrets and addresses out of messages.

Every error message and log line that may contain a backend URL, or a driver's text
that quotes one or names the server, goes through :func:`mask_secrets`: passwords (and
secret query values) become ``***``, and the server's address becomes ``<host>`` — the
host of every URL, every IPv4 or IPv6 literal, and the server names of the backend URLs
this process was given (registered with :func:`hide_hosts_of` when a URL is parsed), so
``Can't connect to MySQL server on 'db.internal'`` is masked too. Ports, user names,
database names, paths and the rest of the text are kept: the message still says what
failed and what to check.

taskflow's own loggers (``fastapi_taskflow`` here; the backends add theirs with
:func:`mask_log_records`) pass every record through :class:`MaskingFilter`, which
masks the message and the traceback of ``exc_info`` — including the driver's exception
chained as ``__cause__`` — before any handler sees it. HTTP answers never include the
store's error text at all (see ``integration``).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
import traceback
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "HOST_MASK",
    "MASK",
    "MaskingFilter",
    "hide_hosts",
    "hide_hosts_of",
    "mask_log_records",
    "mask_secrets",
    "password_span",
]

MASK = "***"
"""What a password is replaced with."""

HOST_MASK = "<host>"
"""What a server's address (host name or IP address) is replaced with."""

# A scheme starts where no scheme character precedes it: a long run of letters is then
# tried once, not from each of its characters (which took seconds for 40,000 of them).
_SCHEME = r"(?<![A-Za-z0-9+.\-])(?P<scheme>(?:[A-Za-z][A-Za-z0-9+.\-]*)?://)"
# user:password@ as SQLAlchemy reads it: the password runs to the last '@' before the
# host, whatever it holds ('/', '?', '#' unencoded included: SQLAlchemy connects with
# them). Bounded, so that many '://' in one long word still cost linear time.
_USERINFO = r"(?P<user>[^/?#\s'\"@:]{0,256}):(?P<password>[^\s'\"]{0,512})@"
_PASSWORD = re.compile(_SCHEME + _USERINFO)
# scheme://[userinfo@]host... up to the end of the authority (the userinfo may hold '@'
# when unencoded; the last '@' before the path ends it, as URL parsers read it).
_AUTHORITY = re.compile(
    _SCHEME + r"(?P<authority>[^/?#\s'\"@:]{0,256}:[^\s'\"]{0,512}@[^/?#\s'\"@]*|[^/?#\s'\"]*)"
)
_SECRET_PARAMS = re.compile(
    r"(?P<name>[?&;](?:password|passwd|pwd|secret|token|api_key|apikey|access_key)=)"
    r"(?P<value>[^&#\s'\"]*)",
    re.IGNORECASE,
)
_HOST_PARAMS = re.compile(r"(?P<name>[?&;](?:host|hostaddr)=)(?P<value>[^&#\s'\"]+)")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
# a run of hex digits, colons and dots (an IPv6 address if ipaddress says so); one
# character class, so a long run costs linear time
_IPV6 = re.compile(r"(?<![\w:.%])[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(?:%[\w.\-]+)?")
_PORT = re.compile(r":\d*")

# Server names of the backend URLs this process was given: masked where a text names a
# server (see hide_hosts); written under the lock, read without it (one reference each).
_hidden_hosts: frozenset[str] = frozenset()
_hidden_hosts_pattern: re.Pattern[str] | None = None
_hidden_hosts_lock = threading.Lock()


def hide_hosts_of(url: str) -> None:
    """Mask the server names ``url`` names (its host, its ``host=`` query values) in
    every message from now on where a driver's text names a server, quoted whole or
    before a port (``on 'db.internal'``, ``connecting to db.internal:6379``), not as
    a URL.

    Called by whatever parses a backend URL (``open_backend`` and the backends' own
    parsers); a URL that cannot be parsed registers nothing.
    """
    span = password_span(url)  # a password may hold what ends a netloc ('/', '?', '#')
    if span is not None:
        url = f"{url[: span[0]]}{MASK}{url[span[1] :]}"
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    names = [_host_name(part) for part in _hosts_of(parts.netloc.rpartition("@")[2])]
    names += [value for name, value in parse_qsl(parts.query) if name in ("host", "hostaddr")]
    hide_hosts(names)


def hide_hosts(names: Iterable[str]) -> None:
    """Mask these server names in every message from now on (see :func:`hide_hosts_of`;
    for a backend built on a client object instead of a URL). Socket paths are kept."""
    global _hidden_hosts, _hidden_hosts_pattern
    new = {name for name in names if name and not name.startswith("/")}
    if new <= _hidden_hosts:
        return
    with _hidden_hosts_lock:
        hosts = _hidden_hosts | new
        # longest first, so 'db.internal' is masked whole before 'db' could match in it
        either = "|".join(re.escape(h) for h in sorted(hosts, key=len, reverse=True))
        # where a driver names a server: quoted whole ('db', "db") or before a port
        # (db:5432); a word of the text that happens to be a host name is left alone
        _hidden_hosts_pattern = re.compile(
            rf"(?<=['\"])(?:{either})(?=['\"])|(?<![\w.\-/@<])(?:{either})(?=:\d)"
        )
        _hidden_hosts = hosts


def _hosts_of(netloc: str) -> list[str]:
    """The ``host[:port]`` parts of an authority without user (several for a cluster
    URL: ``h1:7000,h2:7001``)."""
    return [part for part in netloc.split(",") if part]


def _host_name(host_port: str) -> str:
    """``db`` of ``db:5432``, ``::1`` of ``[::1]:5432``."""
    if host_port.startswith("["):
        return host_port[1:].split("]", 1)[0]
    return host_port.rsplit(":", 1)[0] if host_port.count(":") == 1 else host_port


def password_span(url: str) -> tuple[int, int] | None:
    """Where the password of ``url`` is (start and end index), read as leniently as
    SQLAlchemy reads it (``postgresql://app:p/ss?#1@db/app`` has the password
    ``p/ss?#1``); None when it has none."""
    match = _PASSWORD.match(url)
    return match.span("password") if match else None


def mask_secrets(text: str) -> str:
    """Return ``text`` with passwords and server addresses masked.

    ``postgresql://app:s3cret@db/app`` becomes ``postgresql://app:***@<host>/app``,
    ``redis://:s3cret@cache:6379/0`` becomes ``redis://:***@<host>:6379/0``; query
    parameters such as ``?password=...`` or ``&token=...`` become ``***`` and
    ``?host=...`` becomes ``<host>``. Outside URLs, IP addresses
    (``Connect call failed ('10.1.2.3', 5432)``) and the server names of the backend
    URLs this process was given (see :func:`hide_hosts_of`) become ``<host>``.
    Everything else (user, port, database, path, other query parameters) is kept.
    """
    text = _AUTHORITY.sub(_mask_authority, text)
    text = _SECRET_PARAMS.sub(_mask_param, text)
    text = _HOST_PARAMS.sub(_mask_host_param, text)
    text = _IPV6.sub(_mask_ipv6, text)
    text = _IPV4.sub(_mask_ipv4, text)
    if _hidden_hosts_pattern is not None:
        text = _hidden_hosts_pattern.sub(HOST_MASK, text)
    return text


def _mask_authority(match: re.Match[str]) -> str:
    authority = match["authority"]
    if not authority:
        return match[0]  # sqlite:///path, unix:///socket: no server named
    userinfo, at, hosts = authority.rpartition("@")
    if ":" in userinfo:
        userinfo = f"{userinfo.split(':', 1)[0]}:{MASK}"
    masked = ",".join(_mask_host_port(part) for part in _hosts_of(hosts))
    return f"{match['scheme']}{userinfo}{at}{masked}"


def _mask_host_port(host_port: str) -> str:
    """``<host>:5432`` for ``db:5432`` or ``[::1]:5432``; the port is kept."""
    if host_port.startswith("["):
        port = host_port.partition("]")[2]
    else:
        port = host_port[len(_host_name(host_port)) :]
    return f"{HOST_MASK}{port}" if _PORT.fullmatch(port) else HOST_MASK


def _mask_param(match: re.Match[str]) -> str:
    return f"{match['name']}{MASK}" if match["value"] else match[0]


def _mask_host_param(match: re.Match[str]) -> str:
    if match["value"].startswith("/"):
        return match[0]  # a socket's directory, not an address
    return f"{match['name']}{HOST_MASK}"


def _mask_ipv4(match: re.Match[str]) -> str:
    return HOST_MASK if all(int(part) <= 255 for part in match[0].split(".")) else match[0]


def _mask_ipv6(match: re.Match[str]) -> str:
    end = match.end()
    if end < len(match.string) and (match.string[end].isalnum() or match.string[end] == "_"):
        return match[0]  # part of a longer word
    candidate = match[0].rstrip(".")  # a sentence's full stop is not part of it
    try:
        ipaddress.IPv6Address(candidate.split("%", 1)[0])
    except ValueError:
        return match[0]  # a time of day, a C++ name: not an address
    return HOST_MASK + match[0][len(candidate) :]


class MaskingFilter(logging.Filter):
    """Masks passwords and addresses in a log record (see :func:`mask_secrets`).

    The message is rendered and masked; a traceback (``exc_info``) is formatted, masked
    and kept as the record's ``exc_text``, which every ``logging.Formatter`` prints, and
    the exception object is dropped from the record, so no handler formats the driver's
    own text (which names the server) from it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask ``record`` in place; never drops it."""
        try:
            message = record.getMessage()
        except Exception:  # a bad format: the handler reports it, as without a filter
            return True
        masked = mask_secrets(message)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None:
            formatted = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = mask_secrets(formatted)
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = mask_secrets(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_secrets(record.stack_info)
        return True


_FILTER = MaskingFilter()


def mask_log_records(logger: logging.Logger) -> logging.Logger:
    """Pass every record ``logger`` emits through :class:`MaskingFilter`; return it.

    A logger's filters see only the records logged on that logger itself, so each of
    taskflow's loggers is given the filter where it is created.
    """
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


mask_log_records(logging.getLogger("fastapi_taskflow"))
