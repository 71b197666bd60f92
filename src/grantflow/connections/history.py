"""A connection's health history: every health check (Test connection, the periodic check) and
every change of its status, newest first. Written by `health` and `service.set_status`; read by
the console's connection page. Only the newest `KEEP` lines per connection are kept."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from grantflow.connections.models import HealthEvent
from grantflow.store.base import utcnow

KEEP = 200  # lines per connection; older ones are dropped as new ones come


def record_check(
    session: Session,
    connection_id: str,
    *,
    ok: bool,
    status: str,
    latency_ms: float | None,
    status_code: int | None,
    error_class: str | None,
    message: str | None,
    by: str,
) -> None:
    """A health check and what it found (`status`: the connection's status afterwards)."""
    _add(
        session,
        HealthEvent(
            connection_id=connection_id,
            kind="check",
            status=status,
            ok=ok,
            latency_ms=latency_ms,
            status_code=status_code,
            error_class=error_class,
            message=message,
            actor=by,
        ),
    )


def record_status(
    session: Session,
    connection_id: str,
    *,
    previous: str | None,
    status: str,
    reason: str | None,
    by: str,
) -> None:
    """The connection's status moved from `previous` to `status`, because of `reason`."""
    _add(
        session,
        HealthEvent(
            connection_id=connection_id,
            kind="status",
            status=status,
            previous_status=previous,
            message=reason,
            actor=by,
        ),
    )


def _add(session: Session, event: HealthEvent) -> None:
    event.at = utcnow()
    session.add(event)
    session.flush()
    stale = (
        select(HealthEvent.id)
        .where(HealthEvent.connection_id == event.connection_id)
        .order_by(HealthEvent.at.desc(), HealthEvent.id.desc())
        .offset(KEEP)
    )
    old = list(session.execute(stale).scalars())
    if old:
        session.execute(delete(HealthEvent).where(HealthEvent.id.in_(old)))


def history(session: Session, connection_id: str, limit: int = 50) -> Sequence[HealthEvent]:
    """The newest `limit` lines of the connection's history, newest first."""
    return list(
        session.execute(
            select(HealthEvent)
            .where(HealthEvent.connection_id == connection_id)
            .order_by(HealthEvent.at.desc(), HealthEvent.id.desc())
            .limit(limit)
        ).scalars()
    )
