"""The periods usage is counted in: minutes (UTC, for the breakers), and calendar days and
months in the spend-cap timezone (GRANTFLOW_SPEND_CAP_TIMEZONE), with when each rolls over."""

from __future__ import annotations

import datetime as dt
import functools
from zoneinfo import ZoneInfo

from grantflow.safety.config import defaults

PERIODS = ("day", "month")


def zone() -> ZoneInfo:
    return ZoneInfo(defaults().spend_cap_timezone)


# Minute keys sort among themselves in time order in any collation (one format throughout)
MINUTE_PREFIX = "M:"


def minute_key(now: dt.datetime) -> str:
    return _minute_key(int(now.timestamp()) // 60)


@functools.lru_cache(maxsize=4)
def _minute_key(minute: int) -> str:
    """(Formatted once a minute: every step start counts in this minute and the one before.)"""
    return MINUTE_PREFIX + dt.datetime.fromtimestamp(minute * 60, dt.UTC).strftime("%Y-%m-%dT%H:%M")


def day_key(now: dt.datetime) -> str:
    return _calendar_keys(int(now.timestamp()) // 60, defaults().spend_cap_timezone)[0]


def month_key(now: dt.datetime) -> str:
    return _calendar_keys(int(now.timestamp()) // 60, defaults().spend_cap_timezone)[1]


@functools.lru_cache(maxsize=4)
def _calendar_keys(minute: int, timezone: str) -> tuple[str, str]:
    """The day's and the month's key of a UTC minute in `timezone`, formatted once a minute
    (every step start counts in both). A day starts on a minute in every timezone in use."""
    local = dt.datetime.fromtimestamp(minute * 60, dt.UTC).astimezone(ZoneInfo(timezone))
    return "d:" + local.strftime("%Y-%m-%d"), "m:" + local.strftime("%Y-%m")


def key(period: str, now: dt.datetime) -> str:
    return day_key(now) if period == "day" else month_key(now)


def rolls_over_at(period: str, now: dt.datetime) -> dt.datetime:
    """The start of the next day or month in the spend-cap timezone, as a UTC time."""
    local = now.astimezone(zone())
    if period == "day":
        start = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(), zone())
    else:
        year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
        start = dt.datetime(year, month, 1, tzinfo=zone())
    return start.astimezone(dt.UTC)
