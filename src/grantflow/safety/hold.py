"""What the safety gate answers when a step may not start now."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from grantflow.engine.states import WaitingReason


@dataclass(frozen=True)
class Hold:
    """Why the step may not start now, and until when."""

    reason: WaitingReason  # SAFETY (held until the workflow is resumed) or SPEND_CAP
    failure: dict[str, Any]  # what the run shows: class safety, code, message, next action
    wake_at: dt.datetime | None = None  # spend cap: when the period rolls over (real time)
