"""Read-only questions other subsystems ask about runs."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from grantflow.engine.models import Run
from grantflow.engine.states import RunStatus
from grantflow.store.base import utcnow


def run_activity(session: Session, workflow_id: str) -> tuple[dt.datetime | None, int]:
    """(when the workflow last started a run, how many of its runs failed in the last 24 h)."""
    # (the newest id is the latest start: ids are time-ordered, ix_runs_workflow_id)
    last = session.execute(
        select(Run.created_at)
        .where(Run.workflow_id == workflow_id)
        .order_by(Run.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    failed = session.execute(
        select(func.count())
        .select_from(Run)
        .where(
            Run.workflow_id == workflow_id,
            Run.status.in_([RunStatus.FAILED, RunStatus.TIMED_OUT]),
            Run.finished_at >= utcnow() - dt.timedelta(hours=24),
        )
    ).scalar_one()
    if last is not None and last.tzinfo is None:
        last = last.replace(tzinfo=dt.UTC)
    return last, failed
