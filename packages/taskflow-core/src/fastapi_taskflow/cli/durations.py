"""Parsing the durations and times the commands take: ``30m``, ``12h``, ``7d``, ISO times."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from ..isotime import parse_iso
from .errors import CLIError, ExitCode

__all__ = ["parse_duration", "parse_moment"]

_UNITS = {
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_EXAMPLES = "for example 90s, 30m, 12h, 7d, 2w or 1h30m"


def parse_duration(text: str, *, option: str = "duration") -> timedelta:
    """Parse ``30m``, ``12h``, ``7d``, ``1h30m`` (units s, m, h, d, w) or plain seconds.

    Raises:
        CLIError: (bad usage) the text is not a duration.
    """
    raw = text.strip().lower()
    if not raw:
        raise CLIError(ExitCode.USAGE, f"{option}: empty duration; {_EXAMPLES}")
    try:
        seconds = float(raw)
    except ValueError:
        position, seconds = 0, 0.0
        for match in _PART.finditer(raw):
            if match.start() != position:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            position = match.end()
        if position != len(raw) or position == 0:
            raise CLIError(
                ExitCode.USAGE, f"{option}: {text!r} is not a duration; {_EXAMPLES}"
            ) from None
    if seconds < 0:
        raise CLIError(ExitCode.USAGE, f"{option}: a duration cannot be negative ({text!r})")
    return timedelta(seconds=seconds)


def parse_moment(text: str, *, now: datetime, option: str) -> datetime:
    """Parse a point in time: a duration ago (``2h`` = two hours before ``now``) or an
    ISO 8601 date/time (``2026-11-25``, ``2026-11-25T12:00:00+01:00``; UTC if no offset).

    Raises:
        CLIError: (bad usage) neither a duration nor an ISO time.
    """
    try:
        return now - parse_duration(text, option=option)
    except CLIError:
        pass
    try:
        raw = text.strip()
        moment = parse_iso(raw)
    except ValueError:
        raise CLIError(
            ExitCode.USAGE,
            f"{option}: {text!r} is neither a duration ({_EXAMPLES}: that long ago) nor an "
            "ISO time such as 2026-11-25 or 2026-11-25T12:00:00Z",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)
