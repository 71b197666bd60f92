"""Throttling password sign-in: repeated failures lock an account, and separately an address,
for a while.

Failures are counted within a window (GRANTFLOW_SIGNIN_WINDOW_MINUTES, 15), for an account
since its last successful sign-in: at GRANTFLOW_SIGNIN_MAX_FAILURES (5) for one e-mail, or
GRANTFLOW_SIGNIN_MAX_FAILURES_PER_ADDRESS (20) from one address to any e-mail, sign-in is
refused until GRANTFLOW_SIGNIN_LOCKOUT_MINUTES (15) after the last of those failures. The count
is kept per e-mail as typed, whether or not an account exists, so a lock says nothing about
which accounts exist. A refused attempt is not counted (it was not tried).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from grantflow.auth.models import SignInAttempt
from grantflow.config import Settings

_MAX_COUNTED = 1000  # the most recent failures looked at for one e-mail or address


@dataclass(frozen=True)
class ThrottlePolicy:
    max_failures: int
    max_failures_per_address: int
    window: dt.timedelta
    lockout: dt.timedelta

    @classmethod
    def of(cls, settings: Settings) -> ThrottlePolicy:
        return cls(
            max_failures=settings.signin_max_failures,
            max_failures_per_address=settings.signin_max_failures_per_address,
            window=dt.timedelta(minutes=settings.signin_window_minutes),
            lockout=dt.timedelta(minutes=settings.signin_lockout_minutes),
        )


@dataclass(frozen=True)
class Lock:
    scope: str  # "account" or "address"
    until: dt.datetime

    def minutes_left(self, now: dt.datetime) -> int:
        return max(1, math.ceil((self.until - now).total_seconds() / 60))


def _failure_times(
    session: Session, column: Any, value: str, since: dt.datetime
) -> list[dt.datetime]:
    """Failures for this e-mail (since its last success) or this address (a success from it
    resets nothing: one good account must not cover guessing at others) since `since`, oldest
    first."""
    start = since
    if column is SignInAttempt.email:
        last_success = session.execute(
            select(func.max(SignInAttempt.at)).where(column == value, SignInAttempt.succeeded)
        ).scalar_one_or_none()
        start = max(since, last_success) if last_success else since
    rows = session.execute(
        select(SignInAttempt.at)
        .where(column == value, ~SignInAttempt.succeeded, SignInAttempt.at > start)
        .order_by(SignInAttempt.at.desc())
        .limit(_MAX_COUNTED)
    ).scalars()
    return sorted(rows)


def locked_until(
    times: list[dt.datetime], limit: int, policy: ThrottlePolicy
) -> dt.datetime | None:
    """The end of the latest lock: `limit` failures within the window lock until the last of
    them + the lockout."""
    until = None
    for last in range(limit - 1, len(times)):
        if times[last] - times[last - limit + 1] <= policy.window:
            until = times[last] + policy.lockout
    return until


def lock_for(
    session: Session, policy: ThrottlePolicy, email: str, address: str, now: dt.datetime
) -> Lock | None:
    """The lock refusing a sign-in to `email` from `address` now, or None."""
    since = now - policy.window - policy.lockout
    checks = (
        ("account", SignInAttempt.email, email, policy.max_failures),
        ("address", SignInAttempt.address, address, policy.max_failures_per_address),
    )
    for scope, column, value, limit in checks:
        until = locked_until(_failure_times(session, column, value, since), limit, policy)
        if until is not None and until > now:
            return Lock(scope=scope, until=until)
    return None


def record_attempt(
    session: Session,
    policy: ThrottlePolicy,
    email: str,
    address: str,
    *,
    succeeded: bool,
    now: dt.datetime,
) -> None:
    """Count an attempt, and forget this e-mail's and this address's attempts too old to count
    any more (the audit log keeps the record)."""
    horizon = now - policy.window - policy.lockout
    session.execute(
        delete(SignInAttempt).where(
            or_(SignInAttempt.email == email, SignInAttempt.address == address),
            SignInAttempt.at < horizon,
        )
    )
    session.add(SignInAttempt(email=email, address=address, succeeded=succeeded, at=now))
    session.flush()
