"""Date-times written by databases and JSON encoders read back on every Python."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from fastapi_taskflow.isotime import parse_iso

UTC = timezone.utc


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        # PostgreSQL's JSON drops a fraction's trailing zeros
        ("2026-12-07T13:13:55.81143+00:00", datetime(2026, 12, 7, 13, 13, 55, 811430, UTC)),
        ("2026-12-07T13:13:55.8+00:00", datetime(2026, 12, 7, 13, 13, 55, 800000, UTC)),
        # pydantic writes UTC as Z
        ("2026-12-07T13:13:55Z", datetime(2026, 12, 7, 13, 13, 55, tzinfo=UTC)),
        # PostgreSQL's text: a space, and an offset of hours only
        ("2026-12-07 13:13:55.25+00", datetime(2026, 12, 7, 13, 13, 55, 250000, UTC)),
        (
            "2026-12-07T13:13:55.5-0330",
            datetime(2026, 12, 7, 13, 13, 55, 500000, timezone(-timedelta(hours=3, minutes=30))),
        ),
        # more than microseconds: cut, as Python 3.11 does
        (
            "2026-12-07T13:13:55.123456789+02:00",
            datetime(2026, 12, 7, 13, 13, 55, 123456, timezone(timedelta(hours=2))),
        ),
        ("2026-12-07T13:13:55", datetime(2026, 12, 7, 13, 13, 55)),
        ("2026-12-07", datetime(2026, 12, 7)),
    ],
)
def test_iso_text_from_other_programs_is_read(text: str, moment: datetime) -> None:
    parsed = parse_iso(text)
    assert parsed == moment and parsed.utcoffset() == moment.utcoffset()


def test_text_that_is_no_date_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_iso("yesterday")
