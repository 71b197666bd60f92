"""The control steps: `condition` (branch), `set` (compute values), `delay` (durable timer)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from grantflow.durations import Duration
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


CONDITION_STEP = StepType(
    name="condition",
    summary="Choose the next step by the first branch whose condition holds",
    config_model=ConditionConfig,
    side_effects=_none,
)
SET_STEP = StepType(
    name="set",
    summary="Compute values into the run context",
    config_model=SetConfig,
    side_effects=_none,
    preview=lambda rendered: {"output": rendered.get("values", {})},
)
DELAY_STEP = StepType(
    name="delay",
    summary="Wait durably (the run holds no worker while it waits)",
    config_model=DelayConfig,
    side_effects=_none,
)
