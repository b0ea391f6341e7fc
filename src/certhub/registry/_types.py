"""Portable column types: UTC timestamps and JSON (JSONB on PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

__all__ = ["JSONType", "UTCDateTime"]

_UTC = dt.UTC


class UTCDateTime(sa.TypeDecorator[dt.datetime]):
    """Timestamp stored as UTC, always returned as an aware UTC datetime.

    Naive datetimes are refused on the way in: every time in certhub is aware.
    SQLite keeps the value as naive ISO text (lexically ordered); PostgreSQL as
    ``timestamptz``.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: certhub stores aware UTC datetimes")
        value = value.astimezone(_UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=_UTC)
        return value.astimezone(_UTC)


#: JSON document column; JSONB on PostgreSQL. Python ``None`` is stored as SQL NULL.
JSONType: sa.types.TypeEngine[Any] = sa.JSON(none_as_null=True).with_variant(
    JSONB(none_as_null=True), "postgresql"
)
