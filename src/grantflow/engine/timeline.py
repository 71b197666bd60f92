"""Appending to a run's timeline."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from grantflow.engine.models import RunEvent
from grantflow.store.base import utcnow


def add_event(
    session: Session,
    run_id: str,
    kind: str,
    *,
    step_id: str | None = None,
    attempt: int | None = None,
    actor: str | None = None,
    details: dict[str, Any] | None = None,
    **data: Any,
) -> None:
    session.add(
        RunEvent(
            run_id=run_id,
            at=utcnow(),
            kind=kind,
            step_id=step_id,
            attempt=attempt,
            actor=actor,
            data={**(details or {}), **data},
        )
    )
