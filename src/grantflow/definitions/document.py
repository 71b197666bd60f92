"""The workflow document: what authors write in YAML or JSON, validated by these models."""

from __future__ import annotations

import datetime as dt
import enum
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from grantflow.durations import Duration
from grantflow.strict import Bool, Int, Number

StepId = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
_ID_HINT = "lowercase letters, digits and '_', starting with a letter (at most 63)"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TriggerType(enum.StrEnum):
    ACCESS_GRANTED = "access_granted"  # a grant of the workflow's application became active
    ACCESS_REVOKED = "access_revoked"  # a grant of the workflow's application was revoked
    IDENTITY_JOINED = "identity_joined"  # a person joined (onboarding)
    IDENTITY_MOVED = "identity_moved"  # a person's attributes changed (mover)
    IDENTITY_LEFT = "identity_left"  # a person left (offboarding)
    SCHEDULE = "schedule"  # a cron schedule fired
    MANUAL = "manual"  # an admin or the API started it, with validated input
    WEBHOOK = "webhook"  # an inbound webhook call


APPLICATION_TRIGGERS = {TriggerType.ACCESS_GRANTED, TriggerType.ACCESS_REVOKED}


class AccessTrigger(Strict):
    type: Literal["access_granted", "access_revoked"]


class IdentityTrigger(Strict):
    type: Literal["identity_joined", "identity_moved", "identity_left"]


class ScheduleTrigger(Strict):
    type: Literal["schedule"]
    cron: str = Field(..., description="5-field cron expression, e.g. '0 6 * * 1-5'")
    timezone: str = Field("UTC", description="IANA timezone, e.g. Europe/Berlin")


class ManualTrigger(Strict):
    type: Literal["manual"]
    input_schema: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object"}, description="JSON Schema of the run input"
    )


class WebhookTrigger(Strict):
    type: Literal["webhook"]
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})


Trigger = Annotated[
    AccessTrigger | IdentityTrigger | ScheduleTrigger | ManualTrigger | WebhookTrigger,
    Field(discriminator="type"),
]


class OnFailure(enum.StrEnum):
    FAIL = "fail"  # the run fails
    ESCALATE = "escalate"  # the run waits for a person to retry, skip or fail it
    CONTINUE = "continue"  # the step is marked failed and the run goes on


class Jitter(enum.StrEnum):
    FULL = "full"  # wait a random time between 0 and the backoff (spreads retries out)
    NONE = "none"  # wait exactly the backoff


class RetryPolicy(Strict):
    max_attempts: Int = Field(1, ge=1, le=100, description="1 means no retry")
    initial_backoff: Duration = dt.timedelta(seconds=1)
    max_backoff: Duration = dt.timedelta(minutes=5)
    multiplier: Number = Field(2.0, ge=1.0, le=10.0)
    jitter: Jitter = Jitter.FULL


class Branch(Strict):
    when: str = Field(..., min_length=1, description="condition, e.g. grant.role == 'admin'")
    next: StepId


class Step(Strict):
    id: StepId
    type: str = Field(..., min_length=1, max_length=100)
    name: str | None = Field(None, max_length=200)
    config: dict[str, Any] = Field(default_factory=dict)
    timeout: Duration | None = Field(None, description="per-step timeout")
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    on_failure: OnFailure = OnFailure.FAIL
    reversible: Bool = Field(False, description="can its effect be undone by a later run?")
    next: StepId | None = None
    branches: list[Branch] = Field(default_factory=list, max_length=50)
    max_iterations: Int | None = Field(
        None, ge=1, le=10_000, description="declares a loop through this step, bounded"
    )

    @field_validator("id", mode="before")
    @classmethod
    def _id_hint(cls, value: Any) -> Any:
        if isinstance(value, str) and not re.match(r"^[a-z][a-z0-9_]{0,62}$", value):
            raise ValueError(f"step id {value!r} must be {_ID_HINT}")
        return value


class Settings(Strict):
    execution_timeout: Duration = Field(dt.timedelta(minutes=60))
    stuck_after: Duration = Field(dt.timedelta(minutes=15))
    max_concurrent_runs: Int | None = Field(None, ge=1, le=100_000)


class SafetyLimits(Strict):
    """The workflow's safety breakers; a breaker left out uses the configured default
    (GRANTFLOW_SAFETY_*). When one trips the workflow becomes paused_safety."""

    max_runs_per_minute: Int | None = Field(
        None, ge=1, le=1_000_000, description="runs started in any minute before it trips"
    )
    max_failed_runs: Int | None = Field(
        None, ge=1, le=1_000_000, description="failed runs within failed_runs_window"
    )
    failed_runs_window: Duration | None = Field(None, description="e.g. 10m")
    max_external_calls_per_minute: Int | None = Field(
        None, ge=1, le=10_000_000, description="external-call steps started in any minute"
    )


class WorkflowDocument(Strict):
    """A workflow as authored; the JSON Schema of this model is `grantflow schema workflow`."""

    name: str = Field(..., min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$")
    description: str = Field("", max_length=4000)
    application: str | None = Field(None, max_length=100, description="application id or name")
    trigger: Trigger
    settings: Settings = Field(default_factory=Settings)
    safety: SafetyLimits | None = Field(None, description="safety breakers (defaults: config)")
    entry: StepId | None = Field(None, description="entry step; default the first step")
    steps: list[Step] = Field(default_factory=list, max_length=500)

    def canonical(self) -> dict[str, Any]:
        """The document as stored and diffed: defaults filled in, in field order."""
        return self.model_dump(mode="json", exclude_none=True)
