"""Reading a step's rendered settings: the config model checked once more after the templates
were filled in, a mismatch failing the step (permanent) with the fields named."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic import ValidationError as PydanticError

from grantflow.errors import PermanentError
from grantflow.steps.execution import StepCall


def rendered_config(model: type[BaseModel], call: StepCall) -> Any:
    try:
        return model.model_validate(call.config)
    except PydanticError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_input=False)
        )
        raise PermanentError(
            f"the step's rendered settings are not valid: {problems}",
            code="step_config_invalid",
            next_action="check the step's mapping with a dry-run, fix the workflow, "
            "then Replay with latest",
        ) from None
