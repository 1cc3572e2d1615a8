"""Keeping secrets out of messages: passwords in URLs are masked before they are shown.

Every error message and log line that may contain a backend URL (or a driver's text
that quotes one) goes through :func:`mask_secrets`. HTTP answers never include the
store's address at all (see ``integration``).
"""

from __future__ import annotations

import re

__all__ = ["MASK", "mask_secrets"]

MASK = "***"
"""What a password is replaced with."""

# scheme://[userinfo@]host... up to the end of the authority (the userinfo may hold '@'
# when unencoded; the last '@' before the path ends it, as URL parsers read it).
_AUTHORITY = re.compile(r"(?P<scheme>(?:[A-Za-z][A-Za-z0-9+.\-]*)?://)(?P<authority>[^/?#\s'\"]*)")
_SECRET_PARAMS = re.compile(
    r"(?P<name>[?&;](?:password|passwd|pwd|secret|token|api_key|apikey|access_key)=)"
    r"(?P<value>[^&#\s'\"]*)",
    re.IGNORECASE,
)


def mask_secrets(text: str) -> str:
    """Return ``text`` with the password of every URL in it replaced by ``***``.

    ``postgresql://app:s3cret@db/app`` becomes ``postgresql://app:***@db/app``,
    ``redis://:s3cret@cache:6379/0`` becomes ``redis://:***@cache:6379/0``, and query
    parameters such as ``?password=...`` or ``&token=...`` are masked too. Everything
    else (user, host, path, other query parameters) is kept, so the message still says
    which URL is meant. Text without a URL is returned unchanged.
    """
    return _SECRET_PARAMS.sub(_mask_param, _AUTHORITY.sub(_mask_authority, text))


def _mask_authority(match: re.Match[str]) -> str:
    authority = match["authority"]
    if "@" not in authority:
        return match[0]
    userinfo, host = authority.rsplit("@", 1)
    if ":" not in userinfo:
        return match[0]
    user = userinfo.split(":", 1)[0]
    return f"{match['scheme']}{user}:{MASK}@{host}"


def _mask_param(match: re.Match[str]) -> str:
    return f"{match['name']}{MASK}" if match["value"] else match[0]
