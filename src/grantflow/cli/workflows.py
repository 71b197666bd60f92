"""`grantflow apply`, `grantflow schema workflow`, `grantflow workflows ...`, through
/api/v1/workflows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from grantflow.cli import safety
from grantflow.cli.client import ApiError, Client, connect, segment
from grantflow.cli.context import JSON_OPTION, emit_json, emit_table, errors_as_lines, out
from grantflow.cli.files import read_any

app = typer.Typer(help="Author, publish and inspect workflows.", no_args_is_help=True)
WORKFLOW = typer.Argument(..., help="the workflow's id, name or id prefix")
VERSION = typer.Argument(..., help="the version's number")
COLUMNS = ["id", "name", "trigger", "status", "active_version", "draft_version", "dispatching"]


def _print_problems(exc: ApiError) -> None:
    """Every problem the gate or the document check found, before the one error line."""
    for problem in exc.details:
        where = " ".join(
            x
            for x in (
                f"step {problem.get('step')}" if problem.get("step") else "",
                problem.get("field") or "",
            )
            if x
        )
        out.print(
            f"  [{problem.get('code', 'invalid')}] {where}: {problem.get('message')}", markup=False
        )


def _workflow(api: Client, workflow: str) -> dict[str, Any]:
    found: dict[str, Any] = api.get(f"/workflows/{segment(workflow)}")
    return found


def apply(
    file: Path = typer.Option(..., "-f", "--file", help="a workflow document (YAML or JSON)"),
    publish: bool = typer.Option(False, "--publish", help="publish (and activate) it too"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create the workflow, or a new draft when its content changed; idempotent."""
    with errors_as_lines():
        raw = read_any(file, "--file")
        with connect() as api:
            try:
                result = api.post("/workflows/apply", raw, publish=publish)
            except ApiError as exc:
                _print_problems(exc)
                raise
    result.pop("workflow", None)
    if as_json:
        emit_json(result)
    else:
        published = " and published" if result["published"] else ""
        out.print(f"{result['name']}: {result['action']} (version {result['version']}){published}")


@app.command("list")
def list_workflows(
    limit: int = typer.Option(500, min=1, help="at most this many"), as_json: bool = JSON_OPTION
) -> None:
    """Workflows, and whether each is dispatching."""
    with errors_as_lines(), connect() as api:
        rows = api.items("/workflows", limit)
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, COLUMNS)


@app.command("show")
def show(workflow: str = WORKFLOW, as_json: bool = JSON_OPTION) -> None:
    """A workflow, and whether it is dispatching (and why not)."""
    with errors_as_lines(), connect() as api:
        row = _workflow(api, workflow)
    if as_json:
        emit_json(row)
        return
    emit_table([row], COLUMNS)
    for reason in row["not_dispatching_because"]:
        out.print(f"not dispatching: {reason}", markup=False)


@app.command("versions")
def versions(workflow: str = WORKFLOW, as_json: bool = JSON_OPTION) -> None:
    """The workflow's versions: state, active, who created and published them."""
    with errors_as_lines(), connect() as api:
        rows = api.get(f"/workflows/{_workflow(api, workflow)['id']}/versions")
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, ["number", "state", "active", "created_by", "published_at"])


@app.command("export")
def export(
    workflow: str = WORKFLOW,
    version: int = typer.Option(None, help="default: the active one"),
    as_json: bool = typer.Option(False, "--json", help="the document as JSON, not YAML"),
) -> None:
    """Print a version's canonical YAML."""
    with errors_as_lines(), connect() as api:
        found = _workflow(api, workflow)
        number = version or found["active_version"] or found["draft_version"]
        if number is None:
            raise ApiError(404, f"workflow {found['name']!r} has no version")
        path = f"/workflows/{found['id']}/versions/{number}"
        if as_json:
            emit_json(api.get(path)["document"])
            return
        text = api.request("GET", path, params={"format": "yaml"}).text
    out.print(text, markup=False, end="")


@app.command("diff")
def diff(
    workflow: str = WORKFLOW,
    old: int = typer.Argument(..., help="the version to compare from"),
    new: int = typer.Argument(..., help="the version to compare to"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Unified diff of two versions' canonical YAML."""
    with errors_as_lines(), connect() as api:
        found = _workflow(api, workflow)
        params = {"from": old, "to": new}
        text = api.request("GET", f"/workflows/{found['id']}/diff", params=params).text
    if as_json:
        emit_json({"workflow_id": found["id"], "from": old, "to": new, "diff": text})
    else:
        out.print(text or "(no difference)", markup=False, end="" if text else "\n")


@app.command("validate")
def validate(workflow: str = WORKFLOW, version: int = VERSION, as_json: bool = JSON_OPTION) -> None:
    """Run the publish gate without publishing; exit 1 when it would refuse."""
    with errors_as_lines(), connect() as api:
        found = _workflow(api, workflow)
        data = api.post(f"/workflows/{found['id']}/versions/{version}/validate")
    if as_json:
        emit_json(data)
    else:
        out.print("gate: passes" if data["ok"] else f"gate: {len(data['errors'])} error(s)")
        for kind in ("errors", "warnings"):
            for p in data[kind]:
                out.print(
                    f"  {kind[:-1]} [{p['code']}] {p['step'] or ''} {p['field'] or ''}: "
                    f"{p['message']}",
                    markup=False,
                )
    if not data["ok"]:
        raise typer.Exit(1)


@app.command("publish")
def publish(
    workflow: str = WORKFLOW,
    version: int = VERSION,
    activate: bool = typer.Option(True, "--activate/--no-activate"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Publish a draft through the gate (every problem is listed) and activate it."""
    with errors_as_lines(), connect() as api:
        found = _workflow(api, workflow)
        try:
            result = api.post(
                f"/workflows/{found['id']}/versions/{version}/publish", activate=activate
            )
        except ApiError as exc:
            _print_problems(exc)  # every gate problem, before the one-line error
            raise
    warnings = result["warnings"]
    if as_json:
        emit_json({"published": version, "active": activate, "warnings": warnings})
    else:
        out.print(f"published version {version}{' and activated it' if activate else ''}")
        for w in warnings:
            out.print(f"  warning [{w['code']}] {w['step'] or ''}: {w['message']}", markup=False)


@app.command("recompile")
def recompile_command(
    workflow: str = WORKFLOW, version: int = VERSION, as_json: bool = JSON_OPTION
) -> None:
    """Compile a published version's plan again from its document (fixes plan_integrity_failed;
    then Retry the failed runs)."""
    with errors_as_lines(), connect() as api:
        found = _workflow(api, workflow)
        api.post(f"/workflows/{found['id']}/versions/{version}/recompile")
    if as_json:
        emit_json({"workflow_id": found["id"], "version": version, "recompiled": True})
    else:
        out.print(f"recompiled the plan of version {version}; failed runs can now be retried")


def _workflow_action(workflow: str, action: str, as_json: bool, message: str) -> None:
    with errors_as_lines(), connect() as api:
        row = api.post(f"/workflows/{_workflow(api, workflow)['id']}/{action}")
    if as_json:
        emit_json(row)
    else:
        out.print(message.format(**row), markup=False)


@app.command("activate")
def activate(workflow: str = WORKFLOW, version: int = VERSION, as_json: bool = JSON_OPTION) -> None:
    """Make a published version active (rollback)."""
    _workflow_action(
        workflow, f"versions/{version}/activate", as_json, "version {active_version} is now active"
    )


@app.command("disable")
def disable(workflow: str = WORKFLOW, as_json: bool = JSON_OPTION) -> None:
    """Stop dispatching runs (until enabled)."""
    _workflow_action(workflow, "disable", as_json, "disabled: it dispatches no runs until enabled")


@app.command("enable")
def enable(workflow: str = WORKFLOW, as_json: bool = JSON_OPTION) -> None:
    """Dispatch runs again."""
    _workflow_action(workflow, "enable", as_json, "enabled")


@app.command("dry-run")
def dry_run_command(
    workflow: str = WORKFLOW,
    version: int = typer.Option(None, help="default: the draft, else the active version"),
    sample: Path = typer.Option(
        None, "--sample", help="YAML/JSON with identity, grant, input, steps"
    ),
    as_json: bool = typer.Option(False, "--json", help="(the result is always JSON)"),
) -> None:
    """Render every step's exact request for a sample context; nothing is sent."""
    with errors_as_lines():
        context = read_any(sample, "--sample") if sample else {}
        if sample and not isinstance(context, dict):
            raise ApiError(0, "--sample: the sample must be a mapping (identity, grant, ...)")
        with connect() as api:
            found = _workflow(api, workflow)
            number = version or found["draft_version"] or found["active_version"]
            if number is None:
                raise ApiError(0, "the workflow has no version to dry-run")
            result = api.post(f"/workflows/{found['id']}/versions/{number}/dry-run", context or {})
    out.print(json.dumps(result, indent=2, default=str), markup=False)


safety.register(app)  # webhook-secret, webhook, deliveries, resume-safety
