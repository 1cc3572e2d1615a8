"""Reading ISO 8601 date-times that other programs wrote, on every supported Python.

Python 3.11's ``datetime.fromisoformat`` reads what databases and JSON encoders write:
a ``Z`` for UTC (pydantic), a fraction of 1 to 6 digits and an offset of ``+00``
(PostgreSQL). Python 3.10's reads only what ``isoformat()`` writes, so there the text is
put in that form first.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from datetime import datetime

__all__ = ["parse_iso"]

parse_iso: Callable[[str], datetime]
"""``datetime.fromisoformat`` as Python 3.11 reads it (the function itself there)."""

if sys.version_info >= (3, 11):
    parse_iso = datetime.fromisoformat
else:
    _FRACTION = re.compile(r"\.(\d{1,6})\d*")
    _SHORT_OFFSET = re.compile(r"([+-]\d{2})(\d{2})?$")

    def _iso_as_310_reads_it(text: str) -> datetime:
        text = text.strip()
        if text[-1:] in ("Z", "z"):
            text = text[:-1] + "+00:00"
        # 1 to 6 digits of a second, padded to 6 (more are cut, as 3.11 does)
        text = _FRACTION.sub(lambda m: "." + m.group(1).ljust(6, "0"), text, count=1)
        if len(text) > 10:  # a time part: an offset "+00" or "+0000" becomes "+00:00"
            text = _SHORT_OFFSET.sub(lambda m: f"{m.group(1)}:{m.group(2) or '00'}", text)
        return datetime.fromisoformat(text)

    parse_iso = _iso_as_310_reads_it
