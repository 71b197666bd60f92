"""How access reacts to the engine: incidents for failing revocations, lifecycle states that
settle when their runs finish, and the timers of grant expiry, leave dates and CSV imports.
Loaded through the `grantflow.engine_listeners` entry point."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from grantflow.access import grants, identities, identity_imports, incidents
from grantflow.access.lifecycle import EventKind
from grantflow.access.models import EventRun, Identity
from grantflow.engine import hooks
from grantflow.engine.models import Run, StepRun
from grantflow.engine.states import RunStatus

# the triggers of runs a lifecycle event started (only those can have an EventRun link)
_LIFECYCLE_TRIGGERS = frozenset(kind.value for kind in EventKind)


@hooks.on_step_failure
def _step_failed(
    session: Session, run: Run, step_run: StepRun, failure: dict[str, Any], final: bool
) -> None:
    incidents.revocation_failed(session, run, step_run.step_id, failure)


@hooks.on_run_status(
    wants=lambda end: (
        RunStatus(end.status).terminal
        and (end.trigger in _LIFECYCLE_TRIGGERS or end.replay_of is not None)
    )
)
def _run_status(session: Session, run: Run, old: str, new: str) -> None:
    if run.trigger not in _LIFECYCLE_TRIGGERS and not run.replay_of:
        return  # incidents and identity states follow runs a lifecycle event started only
    status = RunStatus(new)
    if status == RunStatus.SUCCEEDED:
        incidents.run_succeeded(session, run)
    elif status in (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED):
        failure = run.failure or {"message": f"the run ended {new}"}
        incidents.revocation_failed(session, run, failure.get("step_id"), failure)
    if status.terminal:
        link = session.get(EventRun, run.id)
        if link is not None and link.identity_id:
            identity = session.get(Identity, link.identity_id)
            if identity is not None:
                identities.settle(session, identity)


@hooks.on_tick
def expire_grants(session: Session, queue: Any, now: dt.datetime) -> None:
    grants.expire_due(session, queue, now)


@hooks.on_tick
def end_employment(session: Session, queue: Any, now: dt.datetime) -> None:
    identities.leave_due(session, queue, now.date())


@hooks.on_tick
def import_identities(session: Session, queue: Any, now: dt.datetime) -> bool:
    """True while an import has rows left: the worker goes on at once."""
    return identity_imports.import_due(session, queue, now)
