"""`grantflow schema ...`: JSON Schemas of workflow documents and of each step type's config.

Computed from the installed code alone (no database, no server), so they work anywhere.
"""

from __future__ import annotations

import typer

from grantflow.cli.context import JSON_OPTION, emit_json, emit_table, errors_as_lines

app = typer.Typer(
    help="Print JSON Schemas of workflow documents and step configs.", no_args_is_help=True
)


@app.command("workflow")
def schema_workflow() -> None:
    """The JSON Schema of workflow documents, each step type's config schema included."""
    from grantflow.definitions.schemas import workflow_json_schema

    emit_json(workflow_json_schema())


@app.command("step")
def schema_step(step_type: str = typer.Argument(..., help="a step type, e.g. http")) -> None:
    """The JSON Schema of one step type's `config`."""
    from grantflow.definitions.schemas import step_config_schema

    with errors_as_lines():
        emit_json(step_config_schema(step_type))


@app.command("steps")
def schema_steps(as_json: bool = JSON_OPTION) -> None:
    """The step types this installation knows, with what each does."""
    from grantflow.steps.registry import step_types

    rows = [
        {"type": name, "summary": step.summary, "local": step.local}
        for name, step in sorted(step_types().items())
    ]
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, ["type", "summary"])
