"""Access reviews' durable timers, run by workers: reminders when a campaign's
`remind_before` is reached, and closing campaigns whose end has passed (undecided items get
the default decision; a default of revoke is carried out a batch per transaction). Loaded
through the `grantflow.engine_listeners` entry point."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from grantflow.engine import hooks
from grantflow.governance import reviews


@hooks.on_tick
def remind_reviewers(session: Session, queue: Any, now: dt.datetime) -> None:
    reviews.remind_due(session, now)


@hooks.on_tick
def close_ended_reviews(session: Session, queue: Any, now: dt.datetime) -> bool:
    """True while a closing campaign has revocations left: the worker goes on at once."""
    return reviews.close_due(session, queue, now)
