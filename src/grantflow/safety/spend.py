"""Spend caps: at most so many runs, executed steps or external calls per calendar day or month
(in GRANTFLOW_SPEND_CAP_TIMEZONE), for the workspace or one workflow. At 80 % one warning
notification; at 100 % a new step start waits (reason `spend_cap`, naming the cap, the usage and
when the period rolls over). Raising the cap, or the period rolling over, lets the waiting runs
go on by themselves: raising it queues them at once, and a timer queues them at the roll-over.

Usage is counted by the gate (safety/gate.py), once per step."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from grantflow import advice, audit, timestamps
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.definitions.lookup import find_workflow
from grantflow.definitions.models import Workflow
from grantflow.engine.models import Run
from grantflow.engine.states import RunStatus, WaitingReason
from grantflow.engine.timeline import add_event
from grantflow.errors import ValidationError
from grantflow.people.notifications import NotificationKind, notify
from grantflow.queue.interface import Queue
from grantflow.safety import config, periods
from grantflow.safety.hold import Hold
from grantflow.safety.models import SpendCap, UsageCounter
from grantflow.store.base import utcnow

CAPPED_CODE = "spend_cap"
WORKSPACE = "*"
KINDS = ("runs", "steps", "external_calls")
_NOUN = {"runs": "runs", "steps": "executed steps", "external_calls": "external calls"}
WARN_AT = 0.8


def used(session: Session, scope_id: str, kind: str, period_key: str) -> int:
    """What the workspace (every workflow) or one workflow used of `kind` in the period."""
    query = select(func.coalesce(func.sum(UsageCounter.count), 0)).where(
        UsageCounter.kind == kind, UsageCounter.period_key == period_key
    )
    if scope_id != WORKSPACE:
        query = query.where(UsageCounter.scope_id == scope_id)
    return int(session.execute(query).scalar_one())


def _caps_for(session: Session, workflow_id: str, kinds: list[str]) -> list[SpendCap]:
    return list(
        session.execute(
            select(SpendCap).where(
                SpendCap.scope_id.in_([WORKSPACE, workflow_id]), SpendCap.kind.in_(kinds)
            )
        ).scalars()
    )


def _scope_name(session: Session, scope_id: str) -> str:
    if scope_id == WORKSPACE:
        return "the workspace"
    workflow = session.get(Workflow, scope_id)
    return f"workflow {workflow.name!r}" if workflow else f"workflow {scope_id}"


def describe(session: Session, cap: SpendCap, count: int) -> str:
    return (
        f"{_scope_name(session, cap.scope_id)}'s cap of {cap.cap:,} {_NOUN[cap.kind]} per "
        f"{cap.period} is reached ({count:,} used)"
    )


def check(session: Session, workflow_id: str, kinds: list[str], now: dt.datetime) -> Hold | None:
    """The Hold when a cap on one of `kinds` is reached (the one that rolls over last)."""
    reached: list[tuple[dt.datetime, SpendCap, int]] = []
    for cap in _caps_for(session, workflow_id, kinds):
        count = used(session, cap.scope_id, cap.kind, periods.key(cap.period, now))
        if count >= cap.cap:
            reached.append((periods.rolls_over_at(cap.period, now), cap, count))
    if not reached:
        return None
    resets_at, cap, count = max(reached, key=lambda r: r[0])
    zone = config.defaults().spend_cap_timezone
    local = resets_at.astimezone(periods.zone()).strftime("%Y-%m-%d %H:%M")
    failure = {
        "class": "safety",
        "code": CAPPED_CODE,
        "message": f"{describe(session, cap, count)}: new steps wait until the {cap.period} "
        f"rolls over at {local} ({zone}) or the cap is raised",
        "step_id": None,
        **advice.advise(f"waiting.{WaitingReason.SPEND_CAP}"),
        "cap": {
            "scope": "workspace" if cap.scope_id == WORKSPACE else "workflow",
            "workflow_id": None if cap.scope_id == WORKSPACE else cap.scope_id,
            "kind": cap.kind,
            "period": cap.period,
            "cap": cap.cap,
            "used": count,
        },
        "resets_at": timestamps.rfc3339(resets_at),
    }
    # the queue's timer runs on real time; the period on the safety clock (the same, but in
    # tests): wake when as much real time has passed as the period has left
    wake_at = utcnow() + (resets_at - now)
    return Hold(WaitingReason.SPEND_CAP, failure, wake_at)


def warn_if_near(session: Session, workflow_id: str, kinds: list[str], now: dt.datetime) -> None:
    """After a count: one warning when a cap's usage first reaches 80 %, one notice at 100 %."""
    for cap in _caps_for(session, workflow_id, kinds):
        period_key = periods.key(cap.period, now)
        count = used(session, cap.scope_id, cap.kind, period_key)
        warn_at = max(1, math.ceil(cap.cap * WARN_AT))
        dedup = f"{cap.scope_id}:{cap.kind}:{period_key}"
        if count >= cap.cap:
            notify(
                session,
                NotificationKind.SPEND_CAP_REACHED,
                f"{NotificationKind.SPEND_CAP_REACHED}:{dedup}",
                f"Spend cap reached: {describe(session, cap, count)}",
                body="New steps wait until the period rolls over or the cap is raised.",
                target_type="spend_cap",
                target_id=cap.id,
                used=count,
                cap=cap.cap,
            )
        elif count >= warn_at:
            notify(
                session,
                NotificationKind.SPEND_CAP_WARNING,
                f"{NotificationKind.SPEND_CAP_WARNING}:{dedup}",
                f"{_scope_name(session, cap.scope_id)} used {count:,} of its {cap.cap:,} "
                f"{_NOUN[cap.kind]} per {cap.period} ({count * 100 // cap.cap} %)",
                body="At 100 % new steps wait until the period rolls over or the cap is raised.",
                target_type="spend_cap",
                target_id=cap.id,
                used=count,
                cap=cap.cap,
            )


# --- the caps -------------------------------------------------------------------------------------
def set_cap(
    session: Session,
    actor: Actor,
    queue: Queue,
    *,
    workflow: str | None,
    kind: str,
    period: str,
    cap: int | None,
) -> dict[str, Any]:
    """Set (or, with cap None, remove) a cap for the workspace or a workflow (id or name).
    Runs waiting on a spend cap are queued again at once: those the change frees go on."""
    actor.require(Permission.WORKFLOW_PUBLISH)
    problems = []
    if kind not in KINDS:
        problems.append({"field": "kind", "message": f"must be one of {', '.join(KINDS)}"})
    if period not in periods.PERIODS:
        problems.append({"field": "period", "message": "must be day or month"})
    if cap is not None and cap < 0:
        problems.append({"field": "cap", "message": "must be 0 or more (null removes it)"})
    if problems:
        raise ValidationError(
            "the spend cap is not valid: "
            + "; ".join(f"{p['field']}: {p['message']}" for p in problems),
            details=problems,
        )
    scope_id = find_workflow(session, workflow).id if workflow else WORKSPACE
    row = session.execute(
        select(SpendCap).where(
            SpendCap.scope_id == scope_id, SpendCap.kind == kind, SpendCap.period == period
        )
    ).scalar_one_or_none()
    before = row.cap if row else None
    if cap is None:
        if row is not None:
            session.delete(row)
    elif row is None:
        session.add(
            SpendCap(scope_id=scope_id, kind=kind, period=period, cap=cap, updated_by=actor.label)
        )
    else:
        row.cap, row.updated_at, row.updated_by = cap, utcnow(), actor.label
    summary = {"scope": scope_id, "kind": kind, "period": period, "cap": cap, "before": before}
    audit.record(
        session, actor, "spend_cap.set", "spend_cap", f"{scope_id}:{kind}:{period}", summary
    )
    summary["woken"] = wake_capped(session, queue, actor.label)
    return summary


def wake_capped(session: Session, queue: Queue, actor: str, due_only: bool = False) -> int:
    """Queue the runs waiting on a spend cap now (`due_only`: those whose period rolled over by
    the safety clock); each checks its caps again as its step starts."""
    now = config.now()
    runs = session.execute(
        select(Run)
        .where(Run.status == RunStatus.WAITING, Run.waiting_reason == WaitingReason.SPEND_CAP)
        .order_by(Run.created_at)
        .with_for_update()
    ).scalars()
    woken = 0
    for run in runs:
        resets_at = _parse((run.failure or {}).get("resets_at"))
        if due_only and (resets_at is None or resets_at > now):
            continue
        run.wake_at = utcnow()
        add_event(session, run.id, "cap_recheck", actor=actor)
        queue.schedule(session, run.id)
        woken += 1
    return woken


def _parse(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def usage(session: Session, now: dt.datetime | None = None) -> dict[str, Any]:
    """Usage and caps this day and month: the workspace's, and each workflow's that used
    anything or has a cap."""
    now = now or config.now()
    caps = list(session.execute(select(SpendCap)).scalars())
    keys = {period: periods.key(period, now) for period in periods.PERIODS}
    scopes = {WORKSPACE} | {c.scope_id for c in caps}
    scopes |= set(
        session.execute(
            select(UsageCounter.scope_id).where(UsageCounter.period_key.in_(list(keys.values())))
        ).scalars()
    )
    capped = {(c.scope_id, c.kind, c.period): c.cap for c in caps}

    def scope(scope_id: str) -> dict[str, Any]:
        rows = []
        for period, period_key in keys.items():
            for kind in KINDS:
                count = used(session, scope_id, kind, period_key)
                cap = capped.get((scope_id, kind, period))
                rows.append(
                    {
                        "kind": kind,
                        "period": period,
                        "used": count,
                        "cap": cap,
                        "percent": round(count * 100 / cap, 1) if cap else None,
                        "reached": cap is not None and count >= cap,
                        "rolls_over_at": timestamps.rfc3339(periods.rolls_over_at(period, now)),
                    }
                )
        return {"usage": rows}

    workflows = []
    for scope_id in sorted(scopes - {WORKSPACE}):
        workflow = session.get(Workflow, scope_id)
        if workflow is not None:
            workflows.append({"workflow_id": scope_id, "name": workflow.name, **scope(scope_id)})
    return {
        "timezone": config.defaults().spend_cap_timezone,
        "day": keys["day"][2:],
        "month": keys["month"][2:],
        "workspace": scope(WORKSPACE),
        "workflows": workflows,
    }
