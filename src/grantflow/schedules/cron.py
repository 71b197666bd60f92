"""Cron expressions in an IANA timezone: fire times, a plain-words description, warnings.

The rule for daylight-saving changes (wall-clock schedules, like cron): every local time the
expression names fires exactly once.
- A local time skipped by a spring-forward (02:30 in Europe/Berlin on the last Sunday of
  March) fires once, shifted forward by the gap (at 03:30 local), never zero times.
- A local time repeated by a fall-back (02:30 on the last Sunday of October) fires once, at its
  first occurrence (02:30 summer time), never twice.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cron_descriptor import ExpressionDescriptor, Options
from croniter import CroniterBadCronError, CroniterBadDateError, croniter

UTC = dt.UTC
_MAX_STEPS = 5000  # candidate local times examined per query (bounds "never" expressions)


class CronError(ValueError):
    """An expression or timezone that cannot be used, with the reason in plain words."""


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"{name!r} is not an IANA timezone (e.g. Europe/Berlin)") from None


def check(expression: str, timezone: str = "UTC") -> None:
    zone(timezone)
    if len(expression.split()) != 5:
        raise CronError(
            f"{expression!r} must have 5 fields: minute hour day-of-month month day-of-week"
        )
    try:
        croniter(expression, dt.datetime(2000, 1, 1))
    except (CroniterBadCronError, ValueError, KeyError) as exc:
        raise CronError(f"{expression!r} is not a valid cron expression: {exc}") from None


def to_utc(local: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """A naive local wall time to UTC by the rule above (fold=0: the first of a repeated
    time; a nonexistent time is read with the offset before the gap, i.e. shifted forward)."""
    return local.replace(tzinfo=tz, fold=0).astimezone(UTC)


@functools.lru_cache(maxsize=4096)
def _parsed(expression: str) -> croniter:
    try:
        return croniter(expression, dt.datetime(2000, 1, 1))
    except (CroniterBadCronError, ValueError, KeyError) as exc:
        raise CronError(f"{expression!r} is not a valid cron expression: {exc}") from None


def _walker(expression: str, start: dt.datetime) -> croniter:
    """A croniter at `start` (naive local time): a copy of the expression's parsed one (the
    parse is most of the cost of a short walk)."""
    walker = copy.copy(_parsed(expression))
    walker.set_current(start, force=True)
    return walker


_MARGIN = dt.timedelta(hours=3)  # more than any UTC offset change (DST moves 1 h, at most 2 h)


def _near_change(tz: ZoneInfo, instant: dt.datetime) -> bool:
    """Does the UTC offset change within 3 h of `instant`? Only there can a later local time
    map to an earlier (or the same) instant."""
    return (instant - _MARGIN).astimezone(tz).utcoffset() != (instant + _MARGIN).astimezone(
        tz
    ).utcoffset()


def fire_times(
    expression: str,
    timezone: str,
    after: dt.datetime,
    *,
    until: dt.datetime | None = None,
    limit: int = 100,
) -> list[dt.datetime]:
    """The UTC instants strictly after `after` (and not after `until`) the expression fires."""
    tz = zone(timezone)
    # Local times are walked in order. Near an offset change, start 3 h early (a gap-shifted
    # time can land after `after`) and look 3 h past `until`; elsewhere local order is UTC
    # order, so the walk starts at `after` and stops at the first instant past `until`.
    start_at = after - _MARGIN if _near_change(tz, after) else after
    start = start_at.astimezone(tz).replace(tzinfo=None)
    until_margin = _MARGIN if until is not None and _near_change(tz, until) else dt.timedelta(0)
    walker = _walker(expression, start)
    found: list[dt.datetime] = []
    seen: set[dt.datetime] = set()
    for _ in range(_MAX_STEPS):
        try:
            local = walker.get_next(dt.datetime)
        except CroniterBadDateError:
            break  # the expression never fires again (e.g. February 30)
        instant = to_utc(local, tz)
        if until is not None and instant > until and instant not in seen:
            if instant - until > until_margin:
                break
            continue
        if instant <= after or instant in seen:
            continue
        seen.add(instant)
        found.append(instant)
        if len(found) >= limit:
            break
    return sorted(found)


def next_fire(expression: str, timezone: str, after: dt.datetime) -> dt.datetime | None:
    found = fire_times(expression, timezone, after, limit=1)
    return found[0] if found else None


def describe(expression: str, timezone: str | None = None) -> str:
    """Plain words, 24-hour times, e.g. "At 02:30, Monday through Friday (Europe/Berlin)"."""
    options = Options()
    options.use_24hour_time_format = True
    try:
        words = str(ExpressionDescriptor(expression, options).get_description())
    except Exception:  # the library raises its own family; the expression was checked before
        words = expression
    return f"{words} ({timezone})" if timezone else words


def warnings(expression: str, timezone: str, now: dt.datetime) -> list[str]:
    """Expressions that fire rarely or never, in plain words."""
    year = now + dt.timedelta(days=366)
    times = fire_times(expression, timezone, now, until=year, limit=400)
    found: list[str] = []
    if not times:
        later = next_fire(expression, timezone, year)
        if later is None:
            found.append("it never fires: the date it names does not exist (e.g. February 30)")
        else:
            local = later.astimezone(zone(timezone))
            found.append(f"it fires rarely: not in the next year; next on {local:%Y-%m-%d}")
        return found
    day_field = expression.split()[2]
    month_field = expression.split()[3]
    days = {int(d) for d in day_field.replace("-", ",").split(",") if d.isdigit()}
    if month_field == "*" and days and max(days) >= 29:
        found.append(
            f"day {max(days)} does not exist in every month: it fires only in the months "
            f"that have it ({len(times)} times in the next year)"
        )
    elif len(times) <= 2:
        found.append(f"it fires rarely: {len(times)} time(s) in the next year")
    return found
