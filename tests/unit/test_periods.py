"""The minute a step start is counted in (safety breakers): the UTC minute, whatever the
instant's own offset, the same for every instant of that minute."""

from __future__ import annotations

import datetime as dt

from grantflow.safety.periods import minute_key

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
