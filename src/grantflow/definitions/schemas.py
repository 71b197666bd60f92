"""JSON Schemas of workflow documents, with each registered step type's `config` in them.

Editors with a YAML language server validate and complete a step's `config` from the workflow
schema: each step type adds an `if type == T then config follows T's schema` rule to `Step`.
"""

from __future__ import annotations

from typing import Any

from grantflow.definitions.document import WorkflowDocument
from grantflow.errors import NotFound
from grantflow.steps.registry import StepType, get_step_type, step_type_names, step_types

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def step_config_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of one step type's `config`."""
    step_type = get_step_type(name)
    if step_type is None:
        known = ", ".join(step_type_names())
        raise NotFound(
            f"no step type {name!r}", next_action=f"use one of: {known}", code="step_type_unknown"
        )
    return _config_schema(step_type)


def _config_schema(step_type: StepType) -> dict[str, Any]:
    schema = step_type.config_model.model_json_schema()
    schema.setdefault("description", step_type.summary)
    return schema


def workflow_json_schema() -> dict[str, Any]:
    """The workflow document schema, each step type's config schema included."""
    schema = WorkflowDocument.model_json_schema()
    schema["$schema"] = SCHEMA_DIALECT
    schema["$id"] = "https://grantflow.dev/schemas/workflow.json"
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    step = defs["Step"]
    names = sorted(step_types())
    step["properties"]["type"]["examples"] = names
    rules = []
    for name in names:
        config = _config_schema(step_types()[name])
        # a config model's own $defs move up to the document's, under a prefix of its type
        prefix = "config." + name.replace(".", "_") + "."
        config = _rebase(config, prefix)
        for key, value in config.pop("$defs", {}).items():
            defs[prefix + key] = value
        defs[prefix.rstrip(".")] = config
        rules.append(
            {
                "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                "then": {"properties": {"config": {"$ref": f"#/$defs/{prefix.rstrip('.')}"}}},
            }
        )
    step["allOf"] = rules
    return schema


def _rebase(node: Any, prefix: str) -> Any:
    """Rewrite `#/$defs/X` references to `#/$defs/<prefix>X`."""
    if isinstance(node, dict):
        return {
            key: (
                "#/$defs/" + prefix + value.removeprefix("#/$defs/")
                if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/")
                else _rebase(value, prefix)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rebase(item, prefix) for item in node]
    return node
