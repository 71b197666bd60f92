"""The `task` step: a human task with a form (JSON Schema) for its assignees, who Submit it
(the data becomes the step's output), Skip the step, or Fail the run with a reason."""

from __future__ import annotations

from typing import Any, Literal

import jsonschema
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from grantflow.durations import Duration
from grantflow.errors import PermanentError, Rejected
from grantflow.people import human_tasks
from grantflow.steps.approval import Approvers, _is_template, asking
from grantflow.steps.execution import StepCall, StepResult
from grantflow.steps.registry import Reference, StepType


class TaskConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(..., min_length=1, max_length=300, description="what to do (templated)")
    instructions: str = Field("", max_length=10000)
    assignees: Approvers = Field(..., description="users and/or roles who may act")
    form: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object"},
        description="JSON Schema of the data Submit takes; becomes steps.<id>.output",
    )
    timeout: Duration | None = None
    on_timeout: Literal["skip", "fail"] | None = Field(
        None,
        validate_default=True,
        description="what happens at the timeout: chosen explicitly, never a default",
    )

    @field_validator("form")
    @classmethod
    def _schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            jsonschema.Draft202012Validator.check_schema(value)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        return value

    @field_validator("on_timeout")
    @classmethod
    def _explicit_policy(cls, value: str | None, info: ValidationInfo) -> str | None:
        # per field, so the publish gate names steps[n].config.on_timeout
        if "timeout" not in info.data:  # the timeout itself is invalid (reported there)
            return value
        if info.data["timeout"] is not None and value is None:
            raise ValueError("a timeout needs on_timeout: skip or fail")
        if value is not None and info.data["timeout"] is None:
            raise ValueError("on_timeout needs a timeout")
        return value

    @model_validator(mode="after")
    def _shape(self) -> TaskConfig:
        if not self.assignees.users and not self.assignees.roles:
            raise ValueError("name at least one assignee (users or roles)")
        return self


def _references(config: TaskConfig) -> list[Reference]:
    return [
        Reference("user", u, "assignees.users")
        for u in config.assignees.users
        if not _is_template(u)
    ] + [Reference("role", str(r), "assignees.roles") for r in config.assignees.roles]


def _request(config: TaskConfig) -> human_tasks.TaskRequest:
    return human_tasks.TaskRequest(
        title=config.title,
        instructions=config.instructions,
        assignees=config.assignees.model_dump(mode="json"),
        form=config.form,
        timeout=config.timeout,
        on_timeout=config.on_timeout,
    )


def _execute(call: StepCall) -> StepResult:
    config = TaskConfig.model_validate(call.config)
    outcome = human_tasks.advance(asking(call), _request(config))
    if outcome.failed is not None:
        # a person's Fail is a decision against going on; a timeout is not a person's no
        error = Rejected if outcome.code == "failed_by_person" else PermanentError
        raise error(outcome.failed, code=outcome.code, next_action=outcome.next_action)
    if outcome.skipped:
        return StepResult(skipped=True, output=outcome.output)
    if outcome.waiting:
        return StepResult(
            wait_for="task",
            waiting_on=outcome.task_id,
            wake_at=outcome.wake_at,
            extra=outcome.event,
        )
    return StepResult(output=outcome.output)


TASK_STEP = StepType(
    name="task",
    summary="Wait for a person to submit a form, skip the step, or fail the run",
    config_model=TaskConfig,
    side_effects=lambda _c: False,
    references=_references,
    preview=lambda rendered: {"task": rendered},
    execute=_execute,
    local=True,
)
