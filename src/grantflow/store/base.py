"""The declarative base and the column types every table shares."""

from __future__ import annotations

import datetime as dt
from typing import Any

import uuid_utils
from sqlalchemy import JSON, BigInteger, DateTime, Integer, MetaData, TypeDecorator
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase

# Stable constraint names so Alembic migrations are the same on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = JSON().with_variant(JSONB(), "postgresql")
# A key counted by the database for rows written at every step (run events) or change (audit
# entries): 64 bits on PostgreSQL (32 would end at 2,147,483,647 rows); SQLite's INTEGER
# PRIMARY KEY, its 64-bit rowid (a BIGINT there would not be the rowid).
COUNTER = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def new_id() -> str:
    """A time-ordered UUIDv7, so ordering by id is ordering by creation (cursor pagination).
    Its millisecond is the clock's: ids made within one millisecond are ordered by a counter
    in the random bits, not by moving the time ahead (which put a busy process's ids minutes
    in the future, after their rows' `created_at`)."""
    return str(uuid_utils.uuid7())


def first_id_at(moment: dt.datetime) -> str:
    """What every id `new_id` makes at `moment` or later sorts at or after (and every id made
    before it, before): the UUIDv7's 48-bit millisecond time, in its text form's first 13
    characters. Lets a query on a creation time walk ids instead (a time-ordered key)."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)  # (naive: UTC)
    millis = min(max(int(aware.timestamp() * 1000), 0), 2**48 - 1)
    digits = f"{millis:012x}"
    return f"{digits[:8]}-{digits[8:]}"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """An aware UTC timestamp on both databases (SQLite would otherwise return naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
