"""Overdue jobs: every worker's timer tick flags a job whose occurrence is past its grace period
with nothing recorded, so a scheduler that is down is noticed. Apart from the scheduler, so
that a worker's tick does not load it (nor cron)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from grantflow.people.notifications import NotificationKind, notify
from grantflow.schedules.models import Job, JobStatus


def mark_overdue(session: Session, now: dt.datetime) -> list[str]:
    """Jobs whose next occurrence is past its grace period with nothing recorded (the
    scheduler is down or behind): flagged, with one job_overdue notification each."""
    flagged = []
    for job in session.execute(
        select(Job)
        .where(
            Job.status == JobStatus.ENABLED,
            Job.next_fire_at.is_not(None),
            Job.next_fire_at < now,
            Job.overdue_since.is_(None),
        )
        # a job the scheduler is handling right now is not overdue
        .with_for_update(skip_locked=True)
    ).scalars():
        assert job.next_fire_at is not None
        if now - job.next_fire_at <= dt.timedelta(seconds=job.grace_seconds):
            continue
        job.overdue_since = job.next_fire_at
        notify(
            session,
            NotificationKind.JOB_OVERDUE,
            f"job_overdue:{job.id}",
            f"Job {job.name!r} is overdue: its occurrence at {job.next_fire_at:%Y-%m-%d %H:%M}Z "
            "has not started",
            body="Is a scheduler running? (`grantflow scheduler`, or `grantflow serve`)",
            target_type="job",
            target_id=job.id,
        )
        flagged.append(job.id)
    return flagged
