"""Field types for what people send (API bodies and queries, workflow documents): a value is
what it says it is.

Pydantic's lax mode reads `true` as 1, `0` as false, `"yes"` as true, `1.5`-free floats as ints
and a number as a time (seconds since 1970, so `until=0.5` meant 1970). Request models use these
types instead, so each of those is a 422 naming the field:

- `Int`: an integer, not a boolean, a float or a string;
- `Bool`: `true` or `false`, not 0/1 or "yes";
- `Number`: an integer or a float, not a boolean or a string;
- `Timestamp` / `AwareTimestamp`: RFC 3339 text (or a datetime in Python), never a number,
  between the years 1000 and 9000 in UTC (so that moving it by any duration Grantflow accepts
  cannot leave the range of dates, and `9999-12-31T23:59:59-01:00` is a 422, not an overflow);
- `Day`: `YYYY-MM-DD` text (or a date in Python), never a number, in the same years.

Query parameters arrive as text, so they keep pydantic's reading of `"10"` as 10 and `"true"` as
true; only their times use `Timestamp`. `tests/unit/test_strict_fields.py` walks every request
model and fails on a plain `int`, `bool`, `float`, datetime or date.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, Strict

# The largest integer an INTEGER column holds (PostgreSQL's int4): any integer compared with one
# (a version number, a count) is bounded by it, or the driver fails on it (SQLite cannot even
# bind an integer past 64 bits).
MAX_INT = 2**31 - 1

Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
Number = Annotated[float, Strict()]  # (strict floats take ints, never booleans)

_DATE_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _time_text(value: Any) -> Any:
    if isinstance(value, str) and not _DATE_TEXT.match(value.strip()):
        raise ValueError("a time is RFC 3339 text, e.g. 2026-03-02T10:00:00Z")
    if not isinstance(value, str | dt.datetime):
        raise ValueError("a time is RFC 3339 text, e.g. 2026-03-02T10:00:00Z (not a number)")
    return value


def _day_text(value: Any) -> Any:
    if isinstance(value, str) and not _DATE_TEXT.match(value.strip()):
        raise ValueError("a date is YYYY-MM-DD text, e.g. 2026-03-02")
    if not isinstance(value, str | dt.date):
        raise ValueError("a date is YYYY-MM-DD text, e.g. 2026-03-02 (not a number)")
    return value


FIRST_YEAR, LAST_YEAR = 1000, 9000
_OUT_OF_RANGE = f"must be between the years {FIRST_YEAR} and {LAST_YEAR}"


def time_in_range(value: dt.datetime) -> dt.datetime:
    """`value`, unless it is outside the years Grantflow accepts (ValueError saying so)."""
    try:
        utc = value.astimezone(dt.UTC) if value.tzinfo else value
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 is in the year 10000 in UTC
        raise ValueError(_OUT_OF_RANGE) from None
    if not FIRST_YEAR <= utc.year < LAST_YEAR:
        raise ValueError(_OUT_OF_RANGE)
    return value


def _day_in_range(value: dt.date) -> dt.date:
    if not FIRST_YEAR <= value.year < LAST_YEAR:
        raise ValueError(_OUT_OF_RANGE)
    return value


Timestamp = Annotated[dt.datetime, BeforeValidator(_time_text), AfterValidator(time_in_range)]
AwareTimestamp = Annotated[
    AwareDatetime, BeforeValidator(_time_text), AfterValidator(time_in_range)
]
Day = Annotated[dt.date, BeforeValidator(_day_text), AfterValidator(_day_in_range)]

# What the guard test accepts as marking a field strict.
TEXT_ONLY = (_time_text, _day_text)


# How deep a JSON body may nest: deeper, its answer could not be written (the serializer stops
# at about 250 levels, after the request had created what it created) and PostgreSQL's stack
# would be at risk. The API refuses deeper bodies at the door (a 422), before anything parses.
MAX_JSON_DEPTH = 128


# --- text that can be stored ------------------------------------------------------------------
# PostgreSQL refuses a NUL character in text and in JSONB; a lone surrogate (half of a UTF-16
# pair, e.g. "\ud800" in JSON) is not a character at all and cannot be written as UTF-8. Let
# either into a request and the write fails half-way (on SQLite, a run was created and even
# executed while the request answered 500) or the object can never be read back. So every
# string a request carries is checked once, before anything reads it: JSON bodies and the
# query and path in the API middleware, YAML documents where they are parsed.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def text_problem(text: str) -> str | None:
    """What makes `text` unstorable, or None."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "must not contain a NUL character (\\u0000)"
    return f"contains a lone surrogate (\\u{ord(found.group()):04x}), which is not valid Unicode"


def unstorable(value: Any, where: str) -> list[tuple[str, str]]:
    """Every string (value or key) under `value` that cannot be stored: its path from `where`
    (e.g. `body.steps[0].config.k`) and the problem; empty when everything can be stored."""
    found: list[tuple[str, str]] = []
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if problem := text_problem(item):
                found.append((path, problem))
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and (problem := text_problem(key)):
                    shown = key.encode("unicode_escape").decode("ascii")
                    found.append((f"{path}.{shown}", f"this key {problem}"))
                stack.append((child, f"{path}.{key}"))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
    return sorted(found)


# --- partial updates --------------------------------------------------------------------------
# A PATCH body changes only the fields it sends. A field that may be left out but never cleared
# is `NotNull[X]`: leaving it out keeps the value, `null` is a 422 naming the field, and the
# OpenAPI document shows it as X alone (a client generated from it never sends null there).
# Fields that can be cleared stay `X | None`.
_T = TypeVar("_T")


def _refuse_null(value: Any) -> Any:
    if value is None:
        raise ValueError("cannot be null (leave the field out to keep its value)")
    return value


def _without_null(schema: dict[str, Any]) -> None:
    schema.pop("default", None)
    branches = [b for b in schema.pop("anyOf", []) if b != {"type": "null"}]
    if len(branches) == 1:
        schema.update(branches[0])
    elif branches:
        schema["anyOf"] = branches


NotNull = Annotated[
    _T | None, BeforeValidator(_refuse_null), Field(json_schema_extra=_without_null)
]
