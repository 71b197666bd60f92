"""The safety settings this process enforces (the API and workers call `configure`), and the
clock spend-cap periods are counted by (tests replace it)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from grantflow.store.base import utcnow


@dataclass(frozen=True)
class Defaults:
    max_runs_per_minute: int = 1000
    max_failed_runs: int = 50
    failed_runs_window_seconds: float = 600.0
    max_external_calls_per_minute: int = 10_000
    spend_cap_timezone: str = "UTC"


_defaults = Defaults()
_clock: Callable[[], dt.datetime] = utcnow


def configure(settings: Any) -> None:
    """Use these settings' safety defaults (and abuse limits) in this process."""
    from grantflow.safety import limits

    limits.configure(settings)
    global _defaults
    _defaults = Defaults(
        max_runs_per_minute=settings.safety_max_runs_per_minute,
        max_failed_runs=settings.safety_max_failed_runs,
        failed_runs_window_seconds=settings.safety_failed_runs_window_seconds,
        max_external_calls_per_minute=settings.safety_max_external_calls_per_minute,
        spend_cap_timezone=settings.spend_cap_timezone,
    )


def defaults() -> Defaults:
    return _defaults


def now() -> dt.datetime:
    """The safety clock: breaker windows and spend-cap periods are counted by it."""
    return _clock()


def use_clock(clock: Callable[[], dt.datetime] | None) -> None:
    """Count by another clock (tests: a period that rolls over on demand); None: real time."""
    global _clock
    _clock = clock or utcnow


@dataclass(frozen=True)
class Breakers:
    """The breakers of one workflow: its `safety:` block over the configured defaults."""

    max_runs_per_minute: int
    max_failed_runs: int
    failed_runs_window_seconds: float
    max_external_calls_per_minute: int

    @classmethod
    def of(cls, safety: dict[str, Any] | None) -> Breakers:
        given = safety or {}
        base = _defaults
        window = given.get("failed_runs_window")
        return cls(
            max_runs_per_minute=given.get("max_runs_per_minute") or base.max_runs_per_minute,
            max_failed_runs=given.get("max_failed_runs") or base.max_failed_runs,
            failed_runs_window_seconds=_seconds(window) or base.failed_runs_window_seconds,
            max_external_calls_per_minute=given.get("max_external_calls_per_minute")
            or base.max_external_calls_per_minute,
        )


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    from grantflow.durations import parse_duration

    return parse_duration(str(value)).total_seconds()
