"""`grantflow apply`, `grantflow schema workflow`, `grantflow workflows ...`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from grantflow.auth.actor import Actor
from grantflow.cli.context import (
    JSON_OPTION,
    database,
    emit_json,
    emit_table,
    errors_as_lines,
    out,
)
from grantflow.definitions import workflows as service
from grantflow.definitions.dryrun import SampleContext, dry_run
from grantflow.definitions.models import Workflow
from grantflow.definitions.source import parse_text, to_yaml
from grantflow.errors import BadRequest, GrantflowError, ValidationError

app = typer.Typer(help="Author, publish and inspect workflows.", no_args_is_help=True)
CLI = Actor.system("cli")


def _read(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise BadRequest(f"cannot read {path}: {exc.strerror}") from None
    return parse_text(text, name=str(path))


def _print_problems(exc: GrantflowError) -> None:
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


def _row(session: Any, workflow: Workflow) -> dict[str, Any]:
    live = service.liveness(session, workflow)
    draft = service.draft_of(workflow)
    return {
        "id": workflow.id,
        "name": workflow.name,
        "trigger": workflow.trigger_type,
        "status": str(workflow.status),
        "active_version": workflow.active_version,
        "draft_version": draft.number if draft else None,
        "dispatching": live.dispatching,
        "not_dispatching_because": live.reasons,
    }


def apply(
    file: Path = typer.Option(..., "-f", "--file", help="a workflow document (YAML or JSON)"),
    publish: bool = typer.Option(False, "--publish", help="publish (and activate) it too"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create the workflow, or a new draft when its content changed; idempotent."""
    with errors_as_lines():
        raw = _read(file)
        with database() as db, db.transaction() as session:
            try:
                applied = service.apply_document(session, CLI, raw, publish)
            except ValidationError as exc:
                _print_problems(exc)
                raise
            result = {
                "workflow_id": applied.workflow.id,
                "name": applied.workflow.name,
                "version": applied.version.number,
                "action": applied.action,
                "published": applied.published,
                "active_version": applied.workflow.active_version,
            }
    if as_json:
        emit_json(result)
    else:
        published = " and published" if result["published"] else ""
        out.print(f"{result['name']}: {result['action']} (version {result['version']}){published}")


@app.command("list")
def list_workflows(as_json: bool = JSON_OPTION) -> None:
    with errors_as_lines(), database() as db, db.transaction() as session:
        rows = [_row(session, w) for w in service.list_workflows(session, limit=500).items]
    if as_json:
        emit_json(rows)
    else:
        emit_table(
            rows, ["name", "trigger", "status", "active_version", "draft_version", "dispatching"]
        )


@app.command("show")
def show(workflow: str, as_json: bool = JSON_OPTION) -> None:
    """A workflow, and whether it is dispatching (and why not)."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        row = _row(session, service.find_workflow(session, workflow))
    if as_json:
        emit_json(row)
        return
    emit_table(
        [row], ["name", "trigger", "status", "active_version", "draft_version", "dispatching"]
    )
    for reason in row["not_dispatching_because"]:
        out.print(f"not dispatching: {reason}", markup=False)


@app.command("versions")
def versions(workflow: str, as_json: bool = JSON_OPTION) -> None:
    with errors_as_lines(), database() as db, db.transaction() as session:
        found = service.find_workflow(session, workflow)
        rows = [
            {
                "version": v.number,
                "state": v.state,
                "active": found.active_version == v.number,
                "created_by": v.created_by,
                "published_at": v.published_at,
            }
            for v in found.versions
        ]
    emit_json(rows) if as_json else emit_table(rows, list(rows[0]) if rows else ["version"])


@app.command("export")
def export(
    workflow: str, version: int = typer.Option(None, help="default: the active one")
) -> None:
    """Print a version's canonical YAML."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        found = service.find_workflow(session, workflow)
        number = version or found.active_version or service.latest_version(found).number  # type: ignore[union-attr]
        out.print(
            to_yaml(service.get_version(session, found, number).document), markup=False, end=""
        )


@app.command("diff")
def diff(workflow: str, old: int, new: int) -> None:
    """Unified diff of two versions' canonical YAML."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        found = service.find_workflow(session, workflow)
        text = service.diff(session, found.id, old, new)
    out.print(text or "(no difference)", markup=False, end="" if text else "\n")


@app.command("validate")
def validate(workflow: str, version: int, as_json: bool = JSON_OPTION) -> None:
    """Run the publish gate without publishing; exit 1 when it would refuse."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        found = service.find_workflow(session, workflow)
        result = service.validate(session, found.id, version)
    data: dict[str, Any] = {
        "ok": result.ok,
        "errors": [p.to_dict() for p in result.errors],
        "warnings": [p.to_dict() for p in result.warnings],
    }
    if as_json:
        emit_json(data)
    else:
        out.print("gate: passes" if result.ok else f"gate: {len(result.errors)} error(s)")
        for kind in ("errors", "warnings"):
            for p in data[kind]:
                out.print(
                    f"  {kind[:-1]} [{p['code']}] {p['step'] or ''} {p['field'] or ''}: "
                    f"{p['message']}",
                    markup=False,
                )
    if not result.ok:
        raise typer.Exit(1)


@app.command("publish")
def publish(
    workflow: str,
    version: int,
    activate: bool = typer.Option(True, "--activate/--no-activate"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Publish a draft through the gate (every problem is listed) and activate it."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        found = service.find_workflow(session, workflow)
        try:
            _, result = service.publish(session, CLI, found.id, version, activate)
        except ValidationError as exc:
            _print_problems(exc)  # every gate problem, before the one-line error
            raise
        warnings = [p.to_dict() for p in result.warnings]
    if as_json:
        emit_json({"published": version, "active": activate, "warnings": warnings})
    else:
        out.print(f"published version {version}{' and activated it' if activate else ''}")
        for w in warnings:
            out.print(f"  warning [{w['code']}] {w['step'] or ''}: {w['message']}", markup=False)


@app.command("recompile")
def recompile_command(workflow: str, version: int, as_json: bool = JSON_OPTION) -> None:
    """Compile a published version's plan again from its document (fixes plan_integrity_failed;
    then Retry the failed runs)."""
    from grantflow.definitions import recompile

    with errors_as_lines(), database() as db, db.transaction() as session:
        found = service.find_workflow(session, workflow)
        recompile.recompile(session, CLI, found.id, version)
    if as_json:
        emit_json({"workflow_id": found.id, "version": version, "recompiled": True})
    else:
        out.print(f"recompiled the plan of version {version}; failed runs can now be retried")


@app.command("activate")
def activate(workflow: str, version: int) -> None:
    """Make a published version active (rollback)."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        found = service.find_workflow(session, workflow)
        service.activate(session, CLI, found.id, version)
    out.print(f"version {version} is now active")


@app.command("disable")
def disable(workflow: str) -> None:
    with errors_as_lines(), database() as db, db.transaction() as session:
        service.set_enabled(session, CLI, service.find_workflow(session, workflow).id, False)
    out.print("disabled: it dispatches no runs until enabled")


@app.command("enable")
def enable(workflow: str) -> None:
    with errors_as_lines(), database() as db, db.transaction() as session:
        service.set_enabled(session, CLI, service.find_workflow(session, workflow).id, True)
    out.print("enabled")


@app.command("dry-run")
def dry_run_command(
    workflow: str,
    version: int = typer.Option(None, help="default: the draft, else the active version"),
    sample: Path = typer.Option(
        None, "--sample", help="YAML/JSON with identity, grant, input, steps"
    ),
) -> None:
    """Render every step's exact request for a sample context; nothing is sent."""
    with errors_as_lines():
        raw_sample = _read(sample) if sample else {}
        try:
            context = SampleContext.model_validate(raw_sample or {})
        except Exception as exc:  # pydantic's error, shown as one line
            raise BadRequest(f"--sample: {exc}".splitlines()[0]) from None
        with database() as db, db.transaction() as session:
            found = service.find_workflow(session, workflow)
            draft = service.draft_of(found)
            number = version or (draft.number if draft else found.active_version)
            if number is None:
                raise BadRequest("the workflow has no version to dry-run")
            result = dry_run(session, found, service.get_version(session, found, number), context)
    sys_out = json.dumps(result, indent=2, default=str)
    out.print(sys_out, markup=False)


def register(root: typer.Typer) -> None:
    root.command("apply")(apply)
    root.add_typer(app, name="workflows")
