"""Reports' durable timer, run by workers: a report too large to write in its request is
written here, one a transaction. A million rows take seconds: the timer runs in a thread of its
own (`reports`), not in front of grant expiry. Loaded through the `grantflow.engine_listeners`
entry point."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from grantflow.engine import hooks
from grantflow.governance import reports


@hooks.on_long_tick("reports")
def generate_reports(session: Session, queue: Any, now: dt.datetime) -> bool:
    """True when it wrote one: the worker looks for the next at once."""
    return reports.generate_due(session, now)
