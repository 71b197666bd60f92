"""The automation chip of grants: how the runs of a grant's latest lifecycle event are doing (a
replay of a run counting in its place). `automation` reads one grant's; `automations` a whole
page's in a few statements, whatever the page's size. Derived from the runs on every read, so
it is never out of step with them."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    and_,
    exists,
    func,
    literal_column,
    or_,
    select,
    union_all,
)
from sqlalchemy.orm import Session, aliased

from grantflow.access import lifecycle
from grantflow.access.models import EventRun, Grant, LifecycleEvent
from grantflow.engine.models import Run
from grantflow.engine.states import RunStatus, WaitingReason


class Automation(enum.StrEnum):
    """The chip shown on every grant: how its workflows are doing."""

    NONE = "none"  # no workflow ran for it
    PENDING = "pending"  # runs in progress
    SYNCED = "synced"  # every run succeeded
    NEEDS_ATTENTION = "needs_attention"  # a run failed, was stopped, or waits on a person


_PERSON_WAITS = {
    WaitingReason.ESCALATED,
    WaitingReason.APPROVAL,
    WaitingReason.TASK,
    WaitingReason.REAUTH,
}

_ATTENTION = {RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED, RunStatus.PAUSED}
_REPLAY_DEPTH = 10  # replay chains are short; bound the walk
# what the chip shows of a run: its id, workflow, status and why it waits (and whose replay
# it is, to follow the chain)
_RUN_COLUMNS = (Run.id, Run.workflow_id, Run.status, Run.waiting_reason, Run.replay_of)


@dataclass
class AutomationState:
    state: Automation
    runs: list[dict[str, Any]] = field(default_factory=list)
    no_run_reason: str | None = None
    event: dict[str, Any] | None = None


def automation(session: Session, grant: Grant) -> AutomationState:
    """One grant's chip, read step by step: the reference that `automations` gives for each
    grant of a page (a test holds them equal)."""
    event = lifecycle.latest_event(session, grant.id)
    if event is None:
        return AutomationState(Automation.NONE)
    run_ids = list(
        session.execute(select(EventRun.run_id).where(EventRun.event_id == event.id)).scalars()
    )
    runs = latest_of_each(session, run_ids) if run_ids else []
    return _chip(event, [_shown(r) for r in runs])


def latest_of_each(session: Session, run_ids: list[str]) -> list[Run]:
    """Each run, or the newest replay of it: a failed run replayed successfully is fixed."""
    runs = list(session.execute(select(Run).where(Run.id.in_(run_ids))).scalars())
    for _ in range(_REPLAY_DEPTH):
        replays = {
            r.replay_of: r
            for r in session.execute(
                select(Run).where(Run.replay_of.in_([r.id for r in runs])).order_by(Run.id)
            ).scalars()
        }
        if not replays:
            break
        runs = [replays.get(r.id, r) for r in runs]
    return sorted(runs, key=lambda r: r.id)


def automations(session: Session, grant_ids: Sequence[str]) -> dict[str, AutomationState]:
    """The chip of each grant, as `automation` gives it, read for all of them at once: their
    latest events in one statement, those events' runs in one, then one per level of replays
    (none when no run was replayed)."""
    if not grant_ids:
        return {}
    events = _latest_events(session, grant_ids)
    started = _runs_of(session, [e.id for e in events.values()])
    ends = _newest_replays(session, [r for runs in started.values() for r in runs])
    chips = {}
    for grant_id in grant_ids:
        event = events.get(grant_id)
        if event is None:
            chips[grant_id] = AutomationState(Automation.NONE)
            continue
        runs = sorted((ends[r.id] for r in started.get(event.id, [])), key=lambda r: r.id)
        chips[grant_id] = _chip(event, [_shown(r) for r in runs])
    return chips


def _latest_events(session: Session, grant_ids: Sequence[str]) -> dict[str, Any]:
    """Each grant's latest event (as `lifecycle.latest_event` orders them), by grant."""
    event = LifecycleEvent
    ranked = (
        select(
            event.id,
            event.grant_id,
            event.kind,
            event.created_at,
            event.no_run_reason,
            func.row_number()
            .over(
                partition_by=event.grant_id,
                order_by=(event.created_at.desc(), event.id.desc()),
            )
            .label("newest"),
        )
        .where(event.grant_id.in_(grant_ids))
        .subquery()
    )
    latest = session.execute(select(ranked).where(ranked.c.newest == 1))
    return {row.grant_id: row for row in latest}


def _runs_of(session: Session, event_ids: list[str]) -> dict[str, list[Any]]:
    """The runs each event started, by event."""
    if not event_ids:
        return {}
    rows = session.execute(
        select(EventRun.event_id, *_RUN_COLUMNS)
        .join(Run, Run.id == EventRun.run_id)
        .where(EventRun.event_id.in_(event_ids))
    )
    started: dict[str, list[Any]] = {}
    for row in rows:
        started.setdefault(row.event_id, []).append(row)
    return started


def _newest_replays(session: Session, runs: list[Any]) -> dict[str, Any]:
    """For each run, by its id: itself, or the end of its replay chain (the newest replay at
    each level), followed for every run at once one level a statement, as `latest_of_each`
    follows one grant's."""
    ends = {r.id: r for r in runs}
    moved = list(ends)  # the runs whose chain may go on: the end of each changed last level
    for _ in range(_REPLAY_DEPTH):
        if not moved:
            break
        tips = {ends[root].id: root for root in moved}
        replays = {
            r.replay_of: r
            for r in session.execute(
                select(*_RUN_COLUMNS).where(Run.replay_of.in_(list(tips))).order_by(Run.id)
            )
        }
        moved = [tips[tip] for tip in replays]
        for tip, replay in replays.items():
            ends[tips[tip]] = replay
    return ends


def may_have(wanted: Automation) -> ColumnElement[bool] | None:
    """A condition on grants, cheap in SQL, that holds for every grant whose chip is `wanted`
    (and for some others: the chip decides). Needs attention and pending come from the runs a
    chip shows: each run its grant's latest event started, or the end of that run's replays
    as the chip walks them (the newest replay at each level, ten levels at most). Those in
    such a status are few and indexed by status. A started run never replayed counts; a replay
    counts when it was not replayed itself, or lies ten replays down (where the walk stops),
    and its chain up to the run that started it is the newest replay at each level. So a
    failure fixed by a replay (at any level) or by a newer event is left out. None for synced
    and none, most grants' chips: a page of those is found by reading grants in order."""
    ends = _ends(wanted)
    if ends is None:
        return None
    replay, parent = aliased(Run), aliased(Run)
    unreplayed = ~exists().where(replay.replay_of == Run.id)
    own = select(Run.id).where(ends, Run.replay_of.is_(None), unreplayed)
    # a replay that was replayed itself is shown only where the walk stops: whether it was is
    # carried up its chain (`last`), with how far up it went (`depth`)
    replays = select(
        Run.id, Run.replay_of, literal_column("0", Integer).label("depth"), unreplayed.label("last")
    ).where(ends, Run.replay_of.is_not(None), ~_overtaken(Run.id))
    chain = replays.cte("chain", recursive=True)
    # (each step up is a look-up by id: a join here is planned as a read of every run)
    up = select(parent.replay_of).where(parent.id == chain.c.replay_of).scalar_subquery()
    deeper = chain.c.depth + literal_column("1", Integer)
    step = select(chain.c.replay_of, up, deeper, chain.c.last)
    chain = chain.union(step.where(chain.c.replay_of.is_not(None), ~_overtaken(chain.c.replay_of)))
    # at the run that started it, `depth` is how many replays down the chain's end lies
    roots = select(chain.c.id).where(
        chain.c.replay_of.is_(None), or_(chain.c.last, chain.c.depth >= _REPLAY_DEPTH)
    )
    # the event a chip reads: none of its grant's is newer (`_latest_events`' order)
    event, newer = LifecycleEvent, aliased(LifecycleEvent)
    superseded = exists().where(
        newer.grant_id == event.grant_id,
        or_(
            newer.created_at > event.created_at,
            and_(newer.created_at == event.created_at, newer.id > event.id),
        ),
    )
    shown = (
        select(event.grant_id)
        .join(EventRun, EventRun.event_id == event.id)
        .where(EventRun.run_id.in_(union_all(own, roots)), ~superseded)
    )
    return Grant.id.in_(shown)


def _overtaken(run_id: Any) -> ColumnElement[bool]:
    """Whether the run `run_id` is a replay with a newer sibling (a replay of the same run
    with a greater id): the chip's walk takes that one instead."""
    run, sibling = aliased(Run), aliased(Run)
    return exists().where(run.id == run_id, sibling.replay_of == run.replay_of, sibling.id > run.id)


def _ends(wanted: Automation) -> ColumnElement[bool] | None:
    """The runs that, shown on a chip, can make it `wanted`: `_chip`'s rule, as SQL (None:
    the chip of most grants)."""
    if wanted == Automation.NEEDS_ATTENTION:
        person = and_(Run.status == RunStatus.WAITING, Run.waiting_reason.in_(_PERSON_WAITS))
        return or_(Run.status.in_(_ATTENTION), person)
    if wanted == Automation.PENDING:
        return Run.status.in_([s for s in RunStatus if not s.terminal])
    return None


def _shown(run: Any) -> dict[str, Any]:
    """A run as the chip lists it (a Run, or a row of `_RUN_COLUMNS`)."""
    return {
        "id": run.id,
        "workflow_id": run.workflow_id,
        "status": run.status,
        "waiting_reason": run.waiting_reason,
        "link": f"/api/v1/runs/{run.id}",
    }


def _chip(event: Any, runs: list[dict[str, Any]]) -> AutomationState:
    """The chip of an event (a LifecycleEvent or a row with its columns) whose runs, each the
    newest of its replays, are `runs`, in id order."""
    summary = {"id": event.id, "kind": event.kind, "created_at": event.created_at}
    if not runs:
        return AutomationState(Automation.NONE, no_run_reason=event.no_run_reason, event=summary)
    state = Automation.SYNCED
    for run in runs:
        status = RunStatus(run["status"])
        person = status == RunStatus.WAITING and run["waiting_reason"] in _PERSON_WAITS
        if status in _ATTENTION or person:
            state = Automation.NEEDS_ATTENTION
        elif not status.terminal and state != Automation.NEEDS_ATTENTION:
            state = Automation.PENDING
    return AutomationState(state, runs=runs, event=summary)
