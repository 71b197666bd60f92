"""The control steps: `condition` (branch), `set` (compute values), `delay` (durable timer)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from grantflow.durations import Duration
from grantflow.errors import PermanentError
from grantflow.steps.execution import StepCall, StepResult
from grantflow.steps.registry import StepType


def _none(_config: Any) -> bool:
    return False


class ConditionConfig(BaseModel):
    """No settings: a condition step only routes, through its `branches` and `next`."""

    model_config = ConfigDict(extra="forbid")


class SetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    values: dict[str, Any] = Field(
        ..., min_length=1, description="name -> value (templated); becomes steps.<id>.output"
    )


class DelayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    duration: Duration | None = Field(None, description="wait this long")
    until: str | None = Field(None, description="or wait until this ISO time (templated)")

    @model_validator(mode="after")
    def _one(self) -> DelayConfig:
        if (self.duration is None) == (self.until is None):
            raise ValueError("give exactly one of duration or until")
        return self


def _condition(_call: StepCall) -> StepResult:
    return StepResult()  # the interpreter follows the branches


def _set(call: StepCall) -> StepResult:
    return StepResult(output=call.config.get("values", {}))


def _delay(call: StepCall) -> StepResult:
    config = DelayConfig.model_validate(call.config)
    if config.duration is not None:
        # A durable timer measured from the first attempt, so a restart does not extend it.
        started = call.step_started_at or dt.datetime.now(dt.UTC)
        return StepResult(wait_until=started + config.duration)
    try:
        until = dt.datetime.fromisoformat(str(config.until))
    except ValueError:
        raise PermanentError(
            f"delay until {config.until!r} is not an ISO time",
            next_action="map `until` to a time like 2026-12-01T09:00:00Z",
        ) from None
    return StepResult(wait_until=until if until.tzinfo else until.replace(tzinfo=dt.UTC))


CONDITION_STEP = StepType(
    name="condition",
    summary="Choose the next step by the first branch whose condition holds",
    config_model=ConditionConfig,
    side_effects=_none,
    execute=_condition,
    local=True,
    pure=True,
)
SET_STEP = StepType(
    name="set",
    summary="Compute values into the run context",
    config_model=SetConfig,
    side_effects=_none,
    preview=lambda rendered: {"output": rendered.get("values", {})},
    execute=_set,
    local=True,
    pure=True,
)
DELAY_STEP = StepType(
    name="delay",
    summary="Wait durably (the run holds no worker while it waits)",
    config_model=DelayConfig,
    side_effects=_none,
    execute=_delay,
    local=True,
    pure=True,
)
