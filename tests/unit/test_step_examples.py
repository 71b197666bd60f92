"""The step-type reference's examples: one per built-in type, each one the type accepts."""

from __future__ import annotations

import jsonschema
import pytest

from grantflow.definitions.document import Step
from grantflow.definitions.schemas import workflow_json_schema
from grantflow.steps.examples import EXAMPLES
from grantflow.steps.registry import step_types


def test_every_step_type_has_an_example() -> None:
    """A new step type without an example fails here (the reference shows one for each)."""
    assert sorted(EXAMPLES) == sorted(step_types())


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_the_example_is_a_valid_step(name: str) -> None:
    """Each example is a step of its type whose config the type's model and the workflow
    schema both accept."""
    example = EXAMPLES[name]
    step = Step.model_validate(example)
    assert step.type == name
    step_types()[name].config_model.model_validate(step.config)
    document = {"name": "example", "trigger": {"type": "manual"}, "steps": [example]}
    jsonschema.validate(document, workflow_json_schema())
