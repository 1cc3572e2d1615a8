"""Column types that behave the same on SQLite, PostgreSQL and MySQL/MariaDB."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, Text
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from fastapi_taskflow.isotime import parse_iso

__all__ = ["AutoId", "LongText", "UTCDateTime", "sqlite_stamp"]

AutoId = BigInteger().with_variant(Integer(), "sqlite")
"""An auto-increment 64-bit id (SQLite only auto-increments ``INTEGER PRIMARY KEY``)."""

LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
"""Text without MySQL's 64 KiB ``TEXT`` limit (arguments, results, event payloads)."""


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime, stored as UTC on every engine.

    PostgreSQL: ``TIMESTAMP WITH TIME ZONE``. MySQL/MariaDB: ``DATETIME(6)`` holding
    naive UTC. SQLite: SQLAlchemy's fixed-width ISO text holding naive UTC (so text
    order is time order). Values read back are always aware UTC; naive values written
    are taken to be UTC.
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """Pick the storage type for ``dialect``."""
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True))
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert to UTC (naive except on PostgreSQL)."""
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        if dialect.name == "postgresql":
            return value
        return value.replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Return an aware UTC datetime."""
        if value is None:
            return None
        if not isinstance(value, datetime):  # pragma: no cover - defensive
            value = parse_iso(str(value))
        moment: datetime = value
        if moment.tzinfo is None:
            return moment.replace(tzinfo=timezone.utc)
        return moment.astimezone(timezone.utc)


def sqlite_stamp(value: datetime) -> str:
    """What :class:`UTCDateTime` binds on SQLite, in one step: the moment as naive UTC
    in SQLAlchemy's fixed-width text (``YYYY-MM-DD HH:MM:SS.ffffff``).

    For the SQLite writer's prebuilt statements, which bind thousands of datetimes a
    second: the same text as the type's own two processors at a fraction of the cost.
    """
    if value.tzinfo is not None and value.utcoffset():
        value = value.astimezone(timezone.utc)
    text = value.isoformat(" ")
    return text[:26] if value.microsecond else text[:19] + ".000000"
