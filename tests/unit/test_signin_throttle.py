"""The sign-in throttle's rule: `limit` failures within the window lock until the last of them
plus the lockout; failures spread wider than the window lock nothing."""

from __future__ import annotations

import datetime as dt

from grantflow.auth.throttle import ThrottlePolicy, locked_until

POLICY = ThrottlePolicy(
    max_failures=5,
    max_failures_per_address=20,
    window=dt.timedelta(minutes=15),
    lockout=dt.timedelta(minutes=15),
)
T0 = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)


def _at(*minutes: float) -> list[dt.datetime]:
    return [T0 + dt.timedelta(minutes=m) for m in minutes]


def test_five_failures_within_the_window_lock_until_the_last_plus_lockout() -> None:
    """Failures at 0..4 minutes lock until 4 + 15 = 19 minutes."""
    assert locked_until(_at(0, 1, 2, 3, 4), 5, POLICY) == T0 + dt.timedelta(minutes=19)


def test_four_failures_lock_nothing() -> None:
    """One failure short of the limit: no lock."""
    assert locked_until(_at(0, 1, 2, 3), 5, POLICY) is None


def test_failures_spread_wider_than_the_window_lock_nothing() -> None:
    """Five failures over 20 minutes (never five within 15) lock nothing."""
    assert locked_until(_at(0, 5, 10, 15, 20), 5, POLICY) is None


def test_the_latest_qualifying_run_decides() -> None:
    """After a lock, four more failures lock nothing; a fifth within the window locks again,
    until it plus the lockout."""
    assert locked_until(_at(0, 1, 2, 3, 4, 30, 31, 32, 33), 5, POLICY) == T0 + dt.timedelta(
        minutes=19
    )
    times = _at(0, 1, 2, 3, 4, 30, 31, 32, 33, 34)
    assert locked_until(times, 5, POLICY) == T0 + dt.timedelta(minutes=49)
