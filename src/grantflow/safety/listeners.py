"""What the safety package does on the engine's hooks (found through the
`grantflow.engine_listeners` entry point): forgetting old webhook deliveries on a timer."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from sqlalchemy.orm import Session

from grantflow.engine import hooks
from grantflow.safety import webhooks

_PRUNE_EVERY = dt.timedelta(hours=1)
_pruned: dict[str, dt.datetime] = {}
_lock = threading.Lock()


@hooks.on_tick
def prune_deliveries(session: Session, _queue: Any, now: dt.datetime) -> None:
    """Accepted deliveries older than a day, once an hour per process."""
    with _lock:
        last = _pruned.get("accepted")
        if last is not None and now - last < _PRUNE_EVERY:
            return
        _pruned["accepted"] = now
    webhooks.prune_accepted(session, now)
