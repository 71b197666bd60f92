"""What a step executor is given and what it gives back, and the secrets it met on the way:
whatever it returns or raises is scrubbed of them in one place (`scrubbed`, called by the
engine for every call) — on top of the scrubbing of raw bodies before they are cut."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
from sqlalchemy.orm import Session

from grantflow.connections.access import ConnectionAccess
from grantflow.errors import ConfigurationError, ConnectorError, GrantflowError
from grantflow.redaction import NOTHING, Redactor


@dataclass
class SecretsMet:
    """The secrets a step call used — its connections' credentials, a password it generated —
    gathered as it sends them (`steps.transport.send`, the SCIM session)."""

    redactor: Redactor = NOTHING

    def add(self, more: Redactor) -> None:
        self.redactor = self.redactor + more


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
    # local steps run inside the engine's transaction and may read and write through it
    # (approvals and tasks create and read their task rows)
    session: Session | None = None
    run_subject: dict[str, Any] = field(default_factory=dict)  # identity, grant, application
    run_created_by: str | None = None  # who started the run (separation of duties)
    step_run_id: str | None = None
    workflow_id: str | None = None
    now: dt.datetime | None = None  # the engine's clock (timers of approvals and tasks)
    secrets: SecretsMet = field(default_factory=SecretsMet)


@dataclass(frozen=True)
class StepResult:
    output: Any = None
    response: dict[str, Any] | None = None  # what the external system answered (capped)
    wait_until: dt.datetime | None = None  # park the run until then (delay)
    # wait on a person: the waiting reason (approval, task), what is waited on (a task id),
    # and when to look again without a decision (reminders, timeouts); None = the deadline
    wait_for: str | None = None
    waiting_on: str | None = None
    wake_at: dt.datetime | None = None
    skipped: bool = False  # a person skipped the step: the run goes on without its output
    extra: dict[str, Any] = field(default_factory=dict)


def connections_of(call: StepCall) -> ConnectionAccess:
    """The worker's access to connections; a worker started without its configuration (no
    database access to connections) cannot run a step that uses one."""
    if call.connections is None:
        raise ConfigurationError(
            "this worker cannot use connections: it was started without their configuration",
            code="worker_not_configured",
            next_action="run the worker with the configuration (GRANTFLOW_DATABASE_URL and the "
            "master key), then Retry the run",
        )
    return call.connections


def scrubbed(
    outcome: StepResult | BaseException, secrets: SecretsMet
) -> StepResult | BaseException:
    """`outcome` with the secrets the call met scrubbed from everything that gets recorded or
    shown: a result's output, response and event data; an error's message, next action,
    details and response. (A step that met none — most pure steps — costs nothing here.)"""
    redactor = secrets.redactor
    if not redactor:
        return outcome
    if isinstance(outcome, StepResult):
        return replace(
            outcome,
            output=redactor.value(outcome.output),
            response=redactor.value(outcome.response),
            extra=redactor.value(outcome.extra),
        )
    if isinstance(outcome, GrantflowError):
        outcome.message = redactor.text(outcome.message)
        outcome.args = (outcome.message,)
        if outcome.next_action:
            outcome.next_action = redactor.text(outcome.next_action)
        outcome.details = redactor.value(outcome.details)
        outcome.extra = redactor.value(outcome.extra)
        if isinstance(outcome, ConnectorError):
            outcome.response = redactor.value(outcome.response)
    return outcome
