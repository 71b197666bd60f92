"""Waking runs that wait on something a person fixes (a connection's reauthorisation, ...)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from grantflow.auth.actor import Actor
from grantflow.engine.models import Run
from grantflow.engine.states import RunStatus, WaitingReason
from grantflow.engine.transitions import move_run
from grantflow.queue.transports import queue_of
from grantflow.store.database import database_of


def resume_runs_waiting_on(
    session: Session, reason: WaitingReason, target_id: str, actor: Actor
) -> list[str]:
    """Queue every run waiting with `reason` on `target_id`; their ids."""
    runs = (
        session.execute(
            select(Run)
            .where(
                Run.status == RunStatus.WAITING,
                Run.waiting_reason == reason,
                Run.waiting_on == target_id,
            )
            .with_for_update()
        )
        .scalars()
        .all()
    )
    queue = queue_of(database_of(session))
    for run in runs:
        run.waiting_on = None
        move_run(session, run, RunStatus.QUEUED, actor=actor.label, resumed_by=str(reason))
        queue.schedule(session, run.id)
    return [run.id for run in runs]
