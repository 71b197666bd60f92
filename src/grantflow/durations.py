"""Durations as people write them: `90s`, `5m`, `1h30m`, `2d`, `500ms`, ISO 8601, or seconds.

Every duration Grantflow reads (timeouts, delays, backoffs, review lengths) is at most
`MAX_DURATION`: longer ones (`1e16` seconds, `99999999999d`, `1e300`) would overflow a date
computed from them, or the integer columns that keep them, so they are refused here, once, as
a validation error naming the field.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

MAX_DURATION = dt.timedelta(days=3650)  # ten years
_TOO_LONG = "a duration cannot be longer than 3650d (ten years)"

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_ISO = re.compile(
    r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(value: Any) -> dt.timedelta:
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text like '90s', '5m', '2h'")
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_text(value.strip())
    else:
        raise ValueError("a duration is a number of seconds or text like '90s', '5m', '2h'")
    if math.isnan(seconds):
        raise ValueError("a duration is a number of seconds, not NaN")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if seconds > MAX_DURATION.total_seconds():  # (infinity too)
        raise ValueError(_TOO_LONG)
    return dt.timedelta(seconds=seconds)


def _parse_text(text: str) -> float:
    iso = _ISO.match(text)
    if iso and text != "P":
        parts = {k: float(v) for k, v in iso.groupdict().items() if v}
        return (
            parts.get("d", 0) * 86400
            + parts.get("h", 0) * 3600
            + parts.get("m", 0) * 60
            + parts.get("s", 0)
        )
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match[1]) * _UNITS[match[2]]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"{text!r} is not a duration; write e.g. '90s', '5m', '1h30m', '2d'")
    return total


def format_duration(value: dt.timedelta) -> str:
    """The compact form, e.g. `1h30m`; used in canonical documents."""
    ms = round(value.total_seconds() * 1000)
    if ms == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, ms = divmod(ms, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)


Duration = Annotated[
    dt.timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": ["string", "number"],
            "examples": ["90s", "5m", "1h30m", 30],
            "description": "seconds, or text such as 90s, 5m, 1h30m, 2d",
        }
    ),
]
