"""The `approval` step: approvers as users and/or roles; any-one, all, or N of M; optional
stages; required justification; no self-approval; a timeout policy chosen explicitly."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from grantflow.auth.permissions import Role
from grantflow.durations import Duration
from grantflow.errors import Rejected
from grantflow.people import approvals
from grantflow.people.tasks import StepAsk
from grantflow.steps.execution import StepCall, StepResult
from grantflow.steps.registry import Reference, StepType
from grantflow.store.base import utcnow


class Approvers(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: list[str] = Field(
        default_factory=list, description="emails or ids of users (may be templates)"
    )
    roles: list[Role] = Field(default_factory=list, description="any active user of the role")


class Stage(Approvers):
    policy: Literal["any", "all", "n_of_m"] = Field(
        "any", description="any one approver, all of them, or `required` of them"
    )
    required: int | None = Field(None, ge=1, le=50, description="for n_of_m: how many")

    @model_validator(mode="after")
    def _shape(self) -> Stage:
        if not self.users and not self.roles:
            raise ValueError("name at least one approver (users or roles)")
        if self.policy == "n_of_m" and self.required is None:
            raise ValueError("policy n_of_m needs `required` (how many approvals)")
        if self.policy != "n_of_m" and self.required is not None:
            raise ValueError("`required` only applies to policy n_of_m")
        if (
            self.policy == "n_of_m"
            and self.required
            and not self.roles
            and self.required > len(self.users)
        ):
            raise ValueError(
                f"required is {self.required} but only {len(self.users)} approvers are named"
            )
        return self


class ApprovalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field("Approval", max_length=300, description="what is asked (templated)")
    instructions: str = Field("", max_length=5000)
    approvers: Approvers | None = Field(None, description="one stage: who approves")
    policy: Literal["any", "all", "n_of_m"] = "any"
    required: int | None = Field(None, ge=1, le=50)
    stages: list[Stage] | None = Field(
        None, max_length=5, description="several stages, in order (instead of approvers)"
    )
    require_justification: bool = Field(False, description="approvers must comment")
    timeout: Duration | None = Field(None, description="how long approvers have")
    on_timeout: Literal["escalate", "reject", "approve"] | None = Field(
        None,
        validate_default=True,
        description="what happens at the timeout: chosen explicitly, never a default",
    )
    escalate_to: Approvers | None = Field(
        None, validate_default=True, description="fallback approvers (escalate)"
    )
    remind_before: Duration | None = Field(
        None, description="remind the approvers this long before the timeout"
    )

    # The timeout rules are checked per field (in declaration order), so the publish gate
    # names the field to fix, e.g. steps[0].config.on_timeout.
    @field_validator("on_timeout")
    @classmethod
    def _explicit_policy(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "timeout" not in info.data:  # the timeout itself is invalid (reported there)
            return value
        if info.data["timeout"] is not None and value is None:
            raise ValueError("a timeout needs on_timeout: escalate, reject or approve")
        if value is not None and info.data["timeout"] is None:
            raise ValueError("on_timeout needs a timeout")
        return value

    @field_validator("escalate_to")
    @classmethod
    def _fallback(cls, value: Approvers | None, info: ValidationInfo) -> Approvers | None:
        if info.data.get("on_timeout") == "escalate" and (
            value is None or not (value.users or value.roles)
        ):
            raise ValueError("on_timeout escalate needs escalate_to (fallback approvers)")
        return value

    @field_validator("remind_before")
    @classmethod
    def _reminder(cls, value: dt.timedelta | None, info: ValidationInfo) -> dt.timedelta | None:
        if value is None or "timeout" not in info.data:
            return value
        timeout = info.data["timeout"]
        if timeout is None:
            raise ValueError("remind_before needs a timeout")
        if value >= timeout:
            raise ValueError("remind_before must be shorter than the timeout")
        return value

    @model_validator(mode="after")
    def _shape(self) -> ApprovalConfig:
        if (self.approvers is None) == (self.stages is None):
            raise ValueError("give either approvers (one stage) or stages")
        if self.approvers is not None:
            Stage(**self.approvers.model_dump(), policy=self.policy, required=self.required)
        return self

    def all_stages(self) -> list[Stage]:
        if self.stages is not None:
            return self.stages
        assert self.approvers is not None
        return [Stage(**self.approvers.model_dump(), policy=self.policy, required=self.required)]


def _is_template(value: str) -> bool:
    return "{{" in value or "{%" in value


def _references(config: ApprovalConfig) -> list[Reference]:
    """Approvers named statically must exist and be active when the workflow is published;
    roles are checked for active members (a warning: members can be added later)."""
    refs = []
    for n, stage in enumerate(config.all_stages()):
        where = f"stages[{n}].users" if config.stages is not None else "approvers.users"
        refs += [Reference("user", u, where) for u in stage.users if not _is_template(u)]
        refs += [Reference("role", str(r), where.replace("users", "roles")) for r in stage.roles]
    if config.escalate_to is not None:
        refs += [
            Reference("user", u, "escalate_to.users")
            for u in config.escalate_to.users
            if not _is_template(u)
        ]
        refs += [Reference("role", str(r), "escalate_to.roles") for r in config.escalate_to.roles]
    return refs


def asking(call: StepCall) -> StepAsk:
    """The people service's view of a step call that asks people to act (approval, task)."""
    assert call.session is not None and call.step_run_id is not None
    return StepAsk(
        session=call.session,
        run_id=call.run_id,
        step_id=call.step_id,
        step_run_id=call.step_run_id,
        workflow_id=call.workflow_id,
        requester=call.run_created_by,
        subject=call.run_subject,
        now=call.now or utcnow(),
    )


def _request(config: ApprovalConfig) -> approvals.ApprovalRequest:
    return approvals.ApprovalRequest(
        title=config.title,
        instructions=config.instructions,
        stages=[s.model_dump(mode="json") for s in config.all_stages()],
        require_justification=config.require_justification,
        timeout=config.timeout,
        remind_before=config.remind_before,
        on_timeout=config.on_timeout,
        escalate_to=config.escalate_to.model_dump(mode="json") if config.escalate_to else None,
    )


def _execute(call: StepCall) -> StepResult:
    config = ApprovalConfig.model_validate(call.config)
    outcome = approvals.advance(asking(call), _request(config))
    if outcome.rejected is not None:
        raise Rejected(outcome.rejected, next_action=outcome.next_action, code="rejected")
    if outcome.waiting:
        return StepResult(
            wait_for="approval",
            waiting_on=outcome.task_id,
            wake_at=outcome.wake_at,
            extra=outcome.event,
        )
    return StepResult(output=outcome.output)


def _preview(rendered: dict[str, Any]) -> dict[str, Any]:
    return {"approval": rendered}


APPROVAL_STEP = StepType(
    name="approval",
    summary="Wait for approvers to approve (any, all, N of M; stages); rejection fails the run",
    config_model=ApprovalConfig,
    side_effects=lambda _c: False,
    references=_references,
    preview=_preview,
    execute=_execute,
    local=True,
)
