"""Cursor pagination: an opaque cursor that carries the last key of the previous page."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import tuple_
from sqlalchemy.orm import Session

from grantflow.errors import BadRequest

T = TypeVar("T")
K = TypeVar("K", int, str)

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# An int cursor's key is a value of an integer column, within its range: 64 bits (a run event's,
# an audit entry's id: COUNTER) or 32 (a step run's sequence). One out of the column's range was
# never given out, and would fail the query that compares with it.
BIGINT_KEYS = range(-(2**63), 2**63)
INTEGER_KEYS = range(-(2**31), 2**31)


@dataclass(frozen=True)
class Page(Generic[T]):
    items: Sequence[T]
    next_cursor: str | None


def encode_cursor(key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps({"k": key}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, kind: type[K], within: range | None = None) -> K | None:
    """The key inside `cursor`, or None for the first page; a forged cursor is a 400 (an int
    key must be `within` its column's range, which an int cursor's caller names)."""
    if kind is int and within is None:
        raise TypeError("an int cursor is decoded within its column's range")
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode()))["k"]
        if type(key) is not kind or (kind is int and key not in (within or ())):
            raise TypeError(key)
        return key
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise BadRequest(
            "cursor: not a cursor returned by this API",
            next_action="pass the next_cursor value from the previous page unchanged",
            details=[{"field": "query.cursor", "message": "invalid cursor"}],
        ) from None


def page_of(rows: Sequence[T], limit: int, key: Any) -> Page[T]:
    """Build a page from `limit + 1` fetched rows; `key(row)` gives the cursor key."""
    if len(rows) > limit:
        return Page(items=rows[:limit], next_cursor=encode_cursor(key(rows[limit - 1])))
    return Page(items=rows, next_cursor=None)


def newest_of(
    session: Session, equal: Sequence[tuple[Any, Any]], key: Any, before: Any
) -> tuple[list[Any], list[Any]]:
    """The WHERE and leading ORDER BY terms of a newest-first page of rows whose columns are
    equal to their values (`equal`: (column, value) pairs, in the order of an index on those
    columns and `key`), after the cursor's key `before`, if any: the index is walked from the
    page's first row and stops after the page. Add `key DESC` after the terms returned (and
    `key < before`: these do not replace it).

    On PostgreSQL, written as a range of one value per column and ordered by the columns too:
    PostgreSQL drops a column compared with `=` from the ORDER BY and then, expecting the
    matches spread evenly, often walks the primary key and filters instead, which reads every
    newer row when the matches are all old (last month's failures, a retired workflow, a user
    who left). A later page also compares (columns, key) with (values, before), the index's own
    order: else, with few rows older than the cursor, it walks the primary key from the cursor
    and sorts. SQLite takes `=` and the cursor straight into the index (a range would walk it
    from the newest row down to the cursor on every page)."""
    if session.get_bind().dialect.name != "postgresql":
        return [column == value for column, value in equal], []
    where = [term for column, value in equal for term in (column >= value, column <= value)]
    columns = [column for column, _ in equal]
    if before is not None:
        values = [value for _, value in equal]
        where.append(tuple_(*columns, key) < tuple_(*values, before))
    return where, [column.desc() for column in columns]
