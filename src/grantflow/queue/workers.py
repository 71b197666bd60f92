"""The workers the queue knows (their rows are in the database, whatever the transport). Each
registers when it starts and renews its row with every heartbeat (a third of its lease); it
is live while that lease holds, and a worker that died (SIGKILL, a lost host) is shown lost
as soon as its lease runs out — the moment another worker may take its runs. A clean stop
removes the row; a lost worker's row is kept a day, then pruned by the heartbeats of the
others."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, delete, func, or_, select
from sqlalchemy.orm import Session

from grantflow.queue.models import QueueItem, Worker

LEGACY_LIVE = dt.timedelta(seconds=60)  # a row without lease_expires_at (an older worker)
LOST_KEPT = dt.timedelta(days=1)


@dataclass(frozen=True)
class WorkerState:
    id: str
    hostname: str
    pid: int
    concurrency: int
    started_at: dt.datetime
    heartbeat_at: dt.datetime
    lease_expires_at: dt.datetime | None
    live: bool
    runs_in_hand: int  # runs whose queue lease it holds, unexpired
    transport: str = "database"


def live_condition(now: dt.datetime) -> ColumnElement[bool]:
    return or_(
        Worker.lease_expires_at > now,
        and_(Worker.lease_expires_at.is_(None), Worker.heartbeat_at >= now - LEGACY_LIVE),
    )


def live_ids(session: Session, now: dt.datetime) -> list[str]:
    return list(session.execute(select(Worker.id).where(live_condition(now))).scalars())


def fleet(session: Session, now: dt.datetime) -> list[WorkerState]:
    """Every worker seen in the last day, live ones first (oldest first), each with the runs
    in its hand."""
    in_hand = dict(
        session.execute(
            select(QueueItem.lease_owner, func.count())
            .where(QueueItem.lease_owner.is_not(None), QueueItem.lease_expires_at >= now)
            .group_by(QueueItem.lease_owner)
        ).all()
    )
    live = live_condition(now)
    rows = session.execute(
        select(Worker, live)
        .where(Worker.heartbeat_at >= now - LOST_KEPT)
        .order_by(live.desc(), Worker.started_at)
    ).all()
    return [
        WorkerState(
            id=w.id,
            hostname=w.hostname,
            pid=w.pid,
            concurrency=w.concurrency,
            started_at=w.started_at,
            heartbeat_at=w.heartbeat_at,
            lease_expires_at=w.lease_expires_at,
            live=bool(is_live),
            runs_in_hand=int(in_hand.get(w.id, 0)),
            transport=w.transport,
        )
        for w, is_live in rows
    ]


def prune_lost(session: Session, now: dt.datetime) -> None:
    session.execute(delete(Worker).where(Worker.heartbeat_at < now - LOST_KEPT))
