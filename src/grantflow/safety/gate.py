"""The gate every step start passes (the engine's general path and its hot path both call
`admit`): it holds the step while the workflow is paused for safety, trips a throughput breaker
that is over its limit, holds it while a spend cap is reached, and otherwise counts it — once:
a step is keyed `run:step:iteration`, the same for every worker and every retry, so neither a
retry nor a second worker counts it again.

A step start counts one executed step, one external call when the step calls out, and — the
run's first step — one run, in the workflow's counters for the minute (breakers), the day and
the month (spend caps)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from grantflow.definitions.models import Workflow
from grantflow.safety import breakers, config, periods, spend
from grantflow.safety.config import Breakers
from grantflow.safety.hold import Hold
from grantflow.safety.models import UsageCounter, UsageMark
from grantflow.store.database import Database

__all__ = ["Hold", "StepStart", "admit", "admit_own", "step_start"]


@dataclass(frozen=True)
class StepStart:
    """A step about to start, as the gate needs it."""

    run_id: str
    workflow_id: str
    step_id: str
    iteration: int
    sequence: int  # 1: the run's first step, which counts the run
    external: bool  # it calls an external system
    run_created_at: dt.datetime | None
    safety: dict[str, Any]  # the plan's safety block

    @property
    def key(self) -> str:
        return f"{self.run_id}:{self.step_id}:{self.iteration}"

    @property
    def kinds(self) -> list[str]:
        kinds = ["steps"]
        if self.external:
            kinds.append("external_calls")
        if self.sequence == 1:
            kinds.append("runs")
        return kinds


# the breakers each counted kind feeds (per minute)
_MINUTE_BREAKERS = {
    "runs": ("runs_per_minute", "max_runs_per_minute"),
    "external_calls": ("external_calls_per_minute", "max_external_calls_per_minute"),
}


def admit(session: Session, start: StepStart) -> Hold | None:
    """None when the step may start (it is counted now, unless it was before); else the Hold.
    Windows and periods are read on the safety clock (`safety.config.now`)."""
    now = config.now()
    paused, resumed_at = session.execute(
        select(Workflow.safety_pause, Workflow.safety_resumed_at).where(
            Workflow.id == start.workflow_id
        )
    ).one()
    if paused is not None:
        return breakers.held(session, start.workflow_id, paused)
    if session.get(UsageMark, start.key) is not None:
        return None  # counted when it first started: a retry, or another worker's pass
    kinds = start.kinds
    exempt = resumed_at is not None and (
        start.run_created_at is None or start.run_created_at < resumed_at
    )
    if not exempt:  # (runs held before the last resume go on without tripping it again)
        tripped = _check_minute_breakers(session, start, kinds, now)
        if tripped is not None:
            return tripped
    capped = spend.check(session, start.workflow_id, kinds, now)
    if capped is not None:
        return capped
    _count(session, start, kinds, now)
    spend.warn_if_near(session, start.workflow_id, kinds, now)
    return None


def admit_own(database: Database, start: StepStart) -> Hold | None:
    """`admit` in a transaction of its own (the engine's hot path)."""
    with database.transaction() as session:
        return admit(session, start)


def _check_minute_breakers(
    session: Session, start: StepStart, kinds: list[str], now: dt.datetime
) -> Hold | None:
    limits = Breakers.of(start.safety)
    current, previous = periods.minute_key(now), periods.minute_key(now - dt.timedelta(minutes=1))
    for kind in kinds:
        if kind not in _MINUTE_BREAKERS:
            continue
        name, field = _MINUTE_BREAKERS[kind]
        limit: int = getattr(limits, field)
        counts = dict(
            session.execute(
                select(UsageCounter.period_key, UsageCounter.count).where(
                    UsageCounter.scope_id == start.workflow_id,
                    UsageCounter.kind == kind,
                    UsageCounter.period_key.in_([current, previous]),
                )
            ).all()
        )
        # a sliding minute: this minute's count plus the part of the last one still inside
        elapsed = now.second + now.microsecond / 1e6
        in_window = counts.get(current, 0) + counts.get(previous, 0) * (1 - elapsed / 60)
        if in_window + 1 > limit:
            figures = {
                "limit": limit,
                "in_last_minute": round(in_window),
                "setting": f"safety.{field} (default GRANTFLOW_SAFETY_{field.upper()})",
            }
            pause = breakers.trip(session, start.workflow_id, name, figures, now)
            return breakers.held(session, start.workflow_id, pause)
    return None


def _count(session: Session, start: StepStart, kinds: list[str], now: dt.datetime) -> None:
    """The mark and every counter it bumps (one statement for the counters)."""
    session.add(UsageMark(key=start.key, counted_at=now))
    session.flush()
    rows: list[tuple[str, str]] = []
    for kind in kinds:
        keys = [periods.day_key(now), periods.month_key(now)]
        if kind in _MINUTE_BREAKERS:
            keys.append(periods.minute_key(now))
        rows.extend((kind, key) for key in keys)
    params: dict[str, Any] = {"scope": start.workflow_id}
    values = []
    for n, (kind, key) in enumerate(rows):
        values.append(f"(:scope, :k{n}, :p{n}, 1)")
        params[f"k{n}"], params[f"p{n}"] = kind, key
    session.execute(
        text(
            "INSERT INTO usage_counters (scope_id, kind, period_key, count) VALUES "
            + ", ".join(values)
            + " ON CONFLICT (scope_id, kind, period_key) DO UPDATE "
            "SET count = usage_counters.count + 1"
        ),
        params,
    )


def step_start(
    run_id: str,
    workflow_id: str,
    run_created_at: dt.datetime | None,
    iteration: int | None,
    sequence: int,
    step: Any,
    plan: Any,
) -> StepStart:
    """The StepStart of the `iteration`th pass of `step` (a PlanStep), the run's `sequence`th
    step, under `plan`."""
    from grantflow.steps.registry import get_step_type

    step_type = get_step_type(step.type)
    return StepStart(
        run_id=run_id,
        workflow_id=workflow_id,
        step_id=step.id,
        iteration=iteration or 1,
        sequence=sequence,
        external=step_type is not None and not step_type.local,
        run_created_at=run_created_at,
        safety=dict(plan.safety) if plan is not None else {},
    )
