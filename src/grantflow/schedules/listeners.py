"""How schedules react to the engine: an occurrence's outcome follows its run, a queued
occurrence starts when the previous run ends, and workers flag overdue jobs (they notice a
scheduler that is down). Loaded through the `grantflow.engine_listeners` entry point."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from grantflow.engine import hooks
from grantflow.engine.models import Run
from grantflow.engine.states import RunStatus
from grantflow.queue.transports import queue_of
from grantflow.schedules.models import STARTER_LABEL, Job, Occurrence
from grantflow.schedules.overdue import mark_overdue
from grantflow.store.base import utcnow
from grantflow.store.database import database_of


@hooks.on_run_status(
    wants=lambda end: RunStatus(end.status).terminal and end.created_by == STARTER_LABEL
)
def _run_status(session: Session, run: Run, old: str, new: str) -> None:
    if not RunStatus(new).terminal or run.created_by != STARTER_LABEL:
        return  # only a run the scheduler started has an occurrence (no query for the others)
    occurrence = session.execute(
        select(Occurrence).where(Occurrence.run_id == run.id)
    ).scalar_one_or_none()
    if occurrence is None:
        return
    occurrence.outcome = new
    job = session.get(Job, occurrence.job_id)
    if job is not None:  # (whatever the policy is now: one queued earlier still starts)
        from grantflow.schedules import scheduler  # (here: a worker's tick needs none of it)

        scheduler.start_queued(session, queue_of(database_of(session)), job, utcnow())


@hooks.on_tick
def flag_overdue(session: Session, queue: Any, now: dt.datetime) -> None:
    mark_overdue(session, now)
