"""Reports' durable timer, run by workers: a report too large to write in its request is
written here, one a transaction. Loaded through the `grantflow.engine_listeners` entry point."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from grantflow.engine import hooks
from grantflow.governance import reports


@hooks.on_tick
def generate_reports(session: Session, queue: Any, now: dt.datetime) -> bool:
    """True when it wrote one: the worker looks for the next at once."""
    return reports.generate_due(session, now)
