"""The periods a step start is counted in: the minute (safety breakers), the UTC minute
whatever the instant's own offset, the same for every instant of that minute; and the day and
month (spend caps) of the spend-cap timezone, which roll over at its own midnight."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from grantflow.config import load_settings
from grantflow.safety import config as safety_config
from grantflow.safety.periods import day_key, minute_key, month_key

UTC = dt.UTC
PARIS_WINTER = dt.timezone(dt.timedelta(hours=1))


def test_every_instant_of_a_minute_has_its_key() -> None:
    start = dt.datetime(2026, 12, 6, 20, 29, tzinfo=UTC)
    keys = {minute_key(start + dt.timedelta(seconds=s / 10)) for s in range(600)}
    assert keys == {"M:2026-12-06T20:29"}
    assert minute_key(start + dt.timedelta(minutes=1)) == "M:2026-12-06T20:30"
    assert minute_key(start - dt.timedelta(microseconds=1)) == "M:2026-12-06T20:28"


def test_the_key_is_the_utc_minute_of_an_instant_given_with_an_offset() -> None:
    local = dt.datetime(2026, 12, 31, 0, 30, tzinfo=PARIS_WINTER)
    assert minute_key(local) == "M:2026-12-30T23:30"


@pytest.fixture
def in_berlin() -> Iterator[None]:
    safety_config.configure(load_settings(spend_cap_timezone="Europe/Berlin"))
    try:
        yield
    finally:
        safety_config.configure(load_settings())


def test_a_day_and_a_month_roll_over_at_midnight_in_utc() -> None:
    last = dt.datetime(2031, 3, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert (day_key(last), month_key(last)) == ("d:2031-03-31", "m:2031-03")
    first = last + dt.timedelta(microseconds=1)
    assert (day_key(first), month_key(first)) == ("d:2031-04-01", "m:2031-04")


@pytest.mark.usefixtures("in_berlin")
def test_a_day_and_a_month_roll_over_at_midnight_in_the_spend_cap_timezone() -> None:
    # 21:59 UTC on 31 March 2031 is 23:59 in Berlin (summer time); 22:00 UTC is midnight there
    before = dt.datetime(2031, 3, 31, 21, 59, 30, tzinfo=UTC)
    assert (day_key(before), month_key(before)) == ("d:2031-03-31", "m:2031-03")
    after = dt.datetime(2031, 3, 31, 22, 0, tzinfo=UTC)
    assert (day_key(after), month_key(after)) == ("d:2031-04-01", "m:2031-04")


def test_the_keys_follow_a_change_of_the_spend_cap_timezone() -> None:
    instant = dt.datetime(2031, 3, 31, 22, 30, tzinfo=UTC)
    assert day_key(instant) == "d:2031-03-31"
    safety_config.configure(load_settings(spend_cap_timezone="Europe/Berlin"))
    try:
        assert day_key(instant) == "d:2031-04-01"
    finally:
        safety_config.configure(load_settings())
    assert day_key(instant) == "d:2031-03-31"
