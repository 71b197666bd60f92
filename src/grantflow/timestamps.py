"""How Grantflow writes a point in time, everywhere: RFC 3339 in UTC with `Z`.

The API (pydantic), the CLI's `--json`, CSV files, run details and audit summaries all go through
`rfc3339` (or `json_default` for `json.dumps`), so one moment is written one way:
`2026-03-02T10:00:30Z`, `2026-03-02T10:00:30.123456Z` with sub-second precision. Dates stay
`YYYY-MM-DD`. A naive datetime is taken as UTC (what the database stores).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, overload


@overload
def rfc3339(value: dt.datetime) -> str: ...
@overload
def rfc3339(value: None) -> None: ...
def rfc3339(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def plain(value: Any) -> Any:
    """A datetime as RFC 3339 text, a date as ISO 8601 text; anything else unchanged."""
    if isinstance(value, dt.datetime):
        return rfc3339(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def json_default(value: Any) -> Any:
    """`json.dumps(..., default=json_default)`: times as above, anything else as `str`."""
    shown = plain(value)
    return str(value) if shown is value else shown
