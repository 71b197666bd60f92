"""Lifecycle events: a grant, a revoke, a join, a move or a leave, and the runs each starts.

Dispatch is opt-in: an event starts one run per enabled workflow with an active version whose
trigger matches. An event that starts nothing records why, naming each workflow it considered.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from grantflow import advice
from grantflow.access.models import Application, EventRun, Grant, Identity, LifecycleEvent
from grantflow.access.snapshots import application_snapshot, grant_snapshot, identity_snapshot
from grantflow.advice.table import THEN_DISPATCH
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.definitions.models import VersionState, Workflow
from grantflow.engine.models import Run
from grantflow.engine.runs import start_run
from grantflow.engine.states import RunStatus
from grantflow.queue.interface import Queue
from grantflow.store.base import new_id, utcnow


class EventKind(enum.StrEnum):
    ACCESS_GRANTED = "access_granted"
    ACCESS_REVOKED = "access_revoked"
    IDENTITY_JOINED = "identity_joined"
    IDENTITY_MOVED = "identity_moved"
    IDENTITY_LEFT = "identity_left"


class LifecycleState(enum.StrEnum):
    JOINER = "joiner"  # created; onboarding not finished (or not started: inactive pre-hire)
    ACTIVE = "active"
    MOVER = "mover"  # attributes changed; mover workflows not finished
    LEAVER = "leaver"  # left; offboarding (revocations) not finished
    LEFT = "left"


_SAME_WORKFLOWS = "lifecycle.same_workflows"  # (a key of the session's `info`)


@contextlib.contextmanager
def same_workflows(session: Session) -> Iterator[None]:
    """Within: the workflows an event may start are read once per kind and application — for
    a batch of revocations (a campaign's, an offboarding's, expiries), which changes no
    workflow, instead of once per grant."""
    if _SAME_WORKFLOWS in session.info:  # (already within one)
        yield
        return
    session.info[_SAME_WORKFLOWS] = {}
    try:
        yield
    finally:
        session.info.pop(_SAME_WORKFLOWS, None)


def candidates(session: Session, kind: EventKind, app: Application | None) -> list[Workflow]:
    known: dict[tuple[str, str | None], list[Workflow]] | None = session.info.get(_SAME_WORKFLOWS)
    key = (kind.value, app.id if app else None)
    if known is not None and key in known:
        return known[key]
    stmt = select(Workflow).order_by(Workflow.name)
    if kind in (EventKind.ACCESS_GRANTED, EventKind.ACCESS_REVOKED):
        assert app is not None
        stmt = stmt.where(Workflow.application_id == app.id)
    else:
        stmt = stmt.where(Workflow.trigger_type == kind.value)
    found = list(session.execute(stmt).scalars())
    if known is not None:
        known[key] = found
    return found


def _draft_is_empty(workflow: Workflow) -> bool:
    """The workflow has nothing to publish: its newest draft (if any) has no steps."""
    drafts = [v for v in workflow.versions if v.state == VersionState.DRAFT]
    return not drafts or not drafts[-1].document.get("steps")


def why_not(workflow: Workflow, kind: EventKind) -> tuple[str, str | None] | None:
    """Why `workflow` does not start a run for an event of `kind`, and the action that makes it
    start one; None if it starts. Only access_granted has an action: an active grant can be
    dispatched again (`POST /grants/{id}/dispatch`); a revoked grant or a past identity event
    cannot."""
    if workflow.trigger_type != kind.value:
        return f"its trigger is {workflow.trigger_type}, not {kind.value}", None
    problems: list[str] = []
    keys: list[str] = []  # the advice table's no_run.* entries
    if not workflow.enabled:
        problems.append("it is disabled")
        keys.append("no_run.workflow_disabled")
    if workflow.active_version is None:
        if _draft_is_empty(workflow):  # publishing it is refused: steps first
            problems.append("it has no steps, so there is no version to publish")
            keys.append("no_run.no_steps")
        else:
            problems.append("it has no active version")
            keys.append("no_run.unpublished")
    if not problems:
        return None
    action = None
    if kind == EventKind.ACCESS_GRANTED:  # two problems: both fixes, then the one dispatch
        fixes = [advice.TABLE[k].next_action.removesuffix(THEN_DISPATCH) for k in keys]
        action = " and ".join(fixes) + THEN_DISPATCH
    return " and ".join(problems), action


def _no_run_reason(kind: EventKind, app: Application | None, dispatch: list[dict[str, Any]]) -> str:
    where = f"application {app.name!r}" if app else "any application or globally"
    if not dispatch:
        return f"no workflow with trigger {kind.value} exists for {where}"
    named = "; ".join(
        f"workflow {d['workflow_name']!r}: {d['skipped']}"
        + (f" ({d['next_action']})" if d.get("next_action") else "")
        for d in dispatch
    )
    return f"no workflow started a run: {named}"


def emit(
    session: Session,
    actor: Actor,
    queue: Queue,
    kind: EventKind,
    identity: Identity,
    *,
    grant: Grant | None = None,
    app: Application | None = None,
    offboarding: bool = False,
    details: dict[str, Any] | None = None,
    run_input: dict[str, Any] | None = None,
) -> LifecycleEvent:
    """Record the event and start its runs, in the caller's transaction. With `run_input`, each
    run gets it as `input`, after `event` (the kind) and `event_id`."""
    # (inserted once what it dispatched is known: its id and time now, before its runs')
    event = LifecycleEvent(
        id=new_id(),
        created_at=utcnow(),
        kind=kind.value,
        identity_id=identity.id,
        grant_id=grant.id if grant else None,
        application_id=app.id if app else None,
        actor=actor.label,
        details={**(details or {}), **({"offboarding": True} if offboarding else {})},
    )
    subject: dict[str, Any] = {
        "identity": identity_snapshot(session, identity),
        "event": kind.value,
    }
    if grant is not None:
        subject["grant"] = grant_snapshot(grant)
    if app is not None:
        subject["application"] = application_snapshot(app)
    # the runs belong to whoever caused the event; starting them is part of the event itself
    starter = Actor(
        label=actor.label,
        user_id=actor.user_id,
        permissions=frozenset({Permission.RUN_OPERATE}),
        request_id=actor.request_id,
    )
    given = {"event": kind.value, "event_id": event.id, **run_input} if run_input else {}
    dispatch: list[dict[str, Any]] = []
    links: list[EventRun] = []
    for workflow in candidates(session, kind, app):
        entry: dict[str, Any] = {"workflow_id": workflow.id, "workflow_name": workflow.name}
        blocked = why_not(workflow, kind)
        if blocked is None:
            run = start_run(
                session, starter, queue, workflow.id, given, trigger=kind.value, subject=subject
            )
            links.append(
                EventRun(
                    run_id=run.id,
                    event_id=event.id,
                    workflow_id=workflow.id,
                    grant_id=event.grant_id,
                    identity_id=identity.id,
                    offboarding=offboarding or kind == EventKind.IDENTITY_LEFT,
                )
            )
            entry["run_id"] = run.id
        else:
            entry["skipped"], action = blocked
            if action:
                entry["next_action"] = action
        dispatch.append(entry)
    event.dispatch = dispatch
    if not links:
        event.no_run_reason = _no_run_reason(kind, app, dispatch)
    session.add(event)
    session.flush()  # (the event before the links to its runs, which refer to it)
    session.add_all(links)
    session.flush()
    return event


def latest_event(session: Session, grant_id: str) -> LifecycleEvent | None:
    return session.execute(
        select(LifecycleEvent)
        .where(LifecycleEvent.grant_id == grant_id)
        .order_by(LifecycleEvent.created_at.desc(), LifecycleEvent.id.desc())
        .limit(1)
    ).scalar_one_or_none()


API_PREFIX = "/api/v1"  # (the API's; links in answers, not imported to keep access below api)
IDENTITY_EVENTS = (EventKind.IDENTITY_JOINED, EventKind.IDENTITY_MOVED, EventKind.IDENTITY_LEFT)
_UNSUCCESSFUL = (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED)


def failures_of(session: Session, identity_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The lifecycle runs (joiner, mover, leaver and offboarding revocations) that did not
    succeed, per identity: for each workflow (and grant), its latest run if that one failed.
    A later success clears it: the same run retried, a Replay of it, or a newer run of the same
    workflow for the identity. Derived from the runs, so it is never out of step with them."""
    if not identity_ids:
        return {}
    rows = session.execute(
        select(EventRun, Run, LifecycleEvent.kind, Workflow.name)
        .join(Run, Run.id == EventRun.run_id)
        .join(LifecycleEvent, LifecycleEvent.id == EventRun.event_id)
        .join(Workflow, Workflow.id == EventRun.workflow_id)
        .where(
            EventRun.identity_id.in_(identity_ids),
            or_(
                LifecycleEvent.kind.in_([k.value for k in IDENTITY_EVENTS]),
                EventRun.offboarding.is_(True),
            ),
        )
        .order_by(Run.created_at, Run.id)
    ).all()
    latest: dict[tuple[str | None, str, str | None], tuple[EventRun, Run, str, str]] = {}
    for link, run, kind, name in rows:
        latest[(link.identity_id, link.workflow_id, link.grant_id)] = (link, run, kind, name)
    failed = {k: v for k, v in latest.items() if v[1].status in _UNSUCCESSFUL}
    replayed = _replays_succeeded(session, [v[1].id for v in failed.values()])
    found: dict[str, list[dict[str, Any]]] = {}
    for link, run, kind, name in failed.values():
        if run.id in replayed or link.identity_id is None:
            continue
        found.setdefault(link.identity_id, []).append(
            {
                "run_id": run.id,
                "run_url": f"{API_PREFIX}/runs/{run.id}",
                "workflow_id": link.workflow_id,
                "workflow_name": name,
                "event_id": link.event_id,
                "event_kind": kind,
                "grant_id": link.grant_id,
                "status": run.status,
                "message": (run.failure or {}).get("message") or f"the run ended {run.status}",
                "finished_at": run.finished_at,
                "next_action": _next_action(run),
            }
        )
    return found


def _replays_succeeded(session: Session, run_ids: list[str]) -> set[str]:
    """Of these runs, those a Replay (or a Replay of a Replay, …) later made succeed."""
    origin = {r: r for r in run_ids}
    done: set[str] = set()
    while origin:
        replays = session.execute(
            select(Run.id, Run.replay_of, Run.status).where(Run.replay_of.in_(list(origin)))
        ).all()
        following: dict[str, str] = {}
        for run_id, of, status in replays:
            assert of is not None
            if status == RunStatus.SUCCEEDED:
                done.add(origin[of])
            else:
                following[run_id] = origin[of]
        origin = {r: o for r, o in following.items() if o not in done}
    return done


def _next_action(run: Run) -> str | None:
    if run.status == RunStatus.CANCELLED:
        return None  # someone chose to stop it; a Replay is theirs to decide
    return f"fix the cause, then retry the run: POST {API_PREFIX}/runs/{run.id}/retry"
