"""What a step executor is given and what it gives back."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import httpx

from grantflow.connections.access import ConnectionAccess


@dataclass(frozen=True)
class StepCall:
    run_id: str
    step_id: str
    attempt: int
    idempotency_key: str
    config: dict[str, Any]  # rendered: templates already filled in
    timeout: float | None  # seconds this attempt may take
    http: httpx.Client  # the worker's pooled client
    step_started_at: dt.datetime | None = None  # when the step first started (durable timers)
    application_id: str | None = None  # the workflow's application (connections belong to it)
    connections: ConnectionAccess | None = None


@dataclass(frozen=True)
class StepResult:
    output: Any = None
    response: dict[str, Any] | None = None  # what the external system answered (capped)
    wait_until: dt.datetime | None = None  # park the run until then (delay)
    extra: dict[str, Any] = field(default_factory=dict)
