"""`grantflow inbox ...`: approvals, human tasks and escalated failures waiting on people,
through /api/v1/inbox and /api/v1/tasks.

A decision is always someone's. Against a server, the token's user acts. On the local database,
`--as EMAIL` names the user the command acts as, with that user's permissions (as their token
would), and the audit log names them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from grantflow.cli.client import ApiError, Client, connect, segment
from grantflow.cli.context import JSON_OPTION, emit_json, emit_table, errors_as_lines, out
from grantflow.cli.files import read_any
from grantflow.errors import BadRequest

app = typer.Typer(
    help="Approvals and tasks waiting on people: list, show, and decide them.",
    no_args_is_help=True,
)

AS_HELP = (
    "the user to act as (their email), with that user's permissions; on the local database "
    "only (against a server, the token's user acts)"
)
AS_OPTION = typer.Option(None, "--as", help=AS_HELP)
COMMENT_OPTION = typer.Option(None, "--comment", "-m", help="justification or reason")
TASK = typer.Argument(..., help="the task's id (or a unique prefix)")


def needs_person(api: Client, as_email: str | None) -> None:
    """Locally, without a token, the CLI is `system:cli`: a person's decision needs --as."""
    if not api.remote and not api.token and not as_email:
        raise ApiError(
            0,
            "--as EMAIL: on the local database, say which user acts (a decision is a person's)",
            "add --as EMAIL, or use that user's API token (GRANTFLOW_TOKEN)",
        )


def _data(data: str | None, data_file: Path | None) -> dict[str, Any] | None:
    if data is not None and data_file is not None:
        raise BadRequest("give --data or --data-file, not both")
    if data is None and data_file is None:
        return None
    if data_file is not None:
        parsed = read_any(data_file, "--data-file")
    else:
        assert data is not None
        try:
            parsed = json.loads(data)
        except json.JSONDecodeError as exc:
            raise BadRequest(f"--data: not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(parsed, dict):
        raise BadRequest("--data: the form's data must be an object")
    return parsed


def _print_task(view: dict[str, Any]) -> None:
    stages = len(view["stages"])
    staged = view["kind"] == "approval" and stages > 1
    out.print(
        f"{view['kind']} {view['id']}  {view['status']}  {view['title']!r}"
        + (f"  (stage {view['stage']} of {stages})" if staged else ""),
        markup=False,
    )
    workflow = view["workflow"]
    out.print(
        f"  run {view['run_id']}  step {view['step_id']}  workflow "
        f"{workflow.get('name') or workflow.get('id')}",
        markup=False,
    )
    if view.get("instructions"):
        out.print(f"  {view['instructions']}", markup=False)
    if view["status"] == "pending":
        out.print(f"  assigned to: {', '.join(view['assignees']) or 'no one'}", markup=False)
        if view.get("due_at"):
            overdue = " (OVERDUE)" if view.get("overdue") else ""
            out.print(f"  due: {view['due_at']}{overdue}", markup=False)
        if view.get("routing_problem"):
            out.print(f"  PROBLEM: {view['routing_problem']}", markup=False)
        if view.get("require_justification"):
            out.print("  approving needs a justification (--comment)", markup=False)
    if view.get("failure"):
        failure = view["failure"]
        out.print(f"  failure: {failure.get('class')}: {failure.get('message')}", markup=False)
    if view.get("decided_by"):
        out.print(
            f"  decided by {view['decided_by']}"
            + (f": {view['comment']}" if view.get("comment") else ""),
            markup=False,
        )
    for d in view.get("decisions", []):
        out.print(
            f"  - {d['by']} {d['decision']} (stage {d['stage']}, via {d['via']})"
            + (f": {d['comment']}" if d.get("comment") else ""),
            markup=False,
        )


def _emit(view: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(view)
    else:
        _print_task(view)


@app.command("list")
def list_tasks(
    as_email: str = AS_OPTION,
    kind: str = typer.Option(None, help="approval, task or escalation"),
    workflow: str = typer.Option(None, help="workflow id or name"),
    overdue: bool = typer.Option(None, "--overdue/--not-overdue", help="only overdue (or not)"),
    limit: int = typer.Option(50, min=1, max=500),
    as_json: bool = JSON_OPTION,
) -> None:
    """The pending approvals and tasks a user can act on (theirs and their roles')."""
    with errors_as_lines(), connect(act_as=as_email) as api:
        needs_person(api, as_email)
        workflow_id = api.full_id("/workflows", workflow) if workflow else None
        views = api.items("/inbox", limit, kind=kind, workflow_id=workflow_id, overdue=overdue)
    if as_json:
        emit_json(views)
        return
    rows = [
        {
            "id": v["id"],
            "kind": v["kind"],
            "title": v["title"],
            "workflow": v["workflow"].get("name"),
            "run": v["run_id"],
            "due": v["due_at"],
            "overdue": "yes" if v["overdue"] else "",
        }
        for v in views
    ]
    emit_table(rows, ["id", "kind", "title", "workflow", "run", "due", "overdue"])


@app.command("show")
def show(
    task: str = TASK,
    as_email: str = typer.Option(None, "--as", help="say whether this user can act on it"),
    as_json: bool = JSON_OPTION,
) -> None:
    """A task: who it waits on, its form or failure, and the decisions so far."""
    with errors_as_lines(), connect(act_as=as_email) as api:
        view = api.get(f"/tasks/{segment(task)}")
    _emit(view, as_json)


def _decide(
    action: str,
    task: str,
    as_email: str | None,
    comment: str | None,
    data: dict[str, Any] | None,
    as_json: bool,
) -> None:
    with connect(act_as=as_email) as api:
        needs_person(api, as_email)
        task_id = api.full_id("/tasks", task)
        view = api.post(f"/tasks/{task_id}/{action}", {"comment": comment, "data": data})
    _emit(view, as_json)


@app.command("approve")
def approve(
    task: str = TASK, as_email: str = AS_OPTION, comment: str = COMMENT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:  # fmt: skip
    """Approve an approval (its run resumes once the stage's policy is met)."""
    with errors_as_lines({}):
        _decide("approve", task, as_email, comment, None, as_json)


@app.command("reject")
def reject(
    task: str = TASK, as_email: str = AS_OPTION, comment: str = COMMENT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:  # fmt: skip
    """Reject an approval: the run ends failed (class rejected) with your comment."""
    with errors_as_lines({}):
        _decide("reject", task, as_email, comment, None, as_json)


@app.command("submit")
def submit(
    task: str = TASK,
    as_email: str = AS_OPTION,
    data: str = typer.Option(None, "--data", help="the form's data as a JSON object"),
    data_file: Path = typer.Option(None, "--data-file", help="the form's data (JSON or YAML)"),
    comment: str = COMMENT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Submit a task's form: the data is checked against it and becomes the step's output."""
    with errors_as_lines({}):
        _decide("submit", task, as_email, comment, _data(data, data_file), as_json)


@app.command("skip")
def skip(
    task: str = TASK, as_email: str = AS_OPTION, comment: str = COMMENT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:  # fmt: skip
    """Skip the task's step (or an escalated failed step); the run goes on."""
    with errors_as_lines({}):
        _decide("skip", task, as_email, comment, None, as_json)


@app.command("fail")
def fail(
    task: str = TASK,
    as_email: str = AS_OPTION,
    comment: str = typer.Option(..., "--comment", "-m", help="why the run should fail"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Fail the run at this task (or escalated step), with a reason."""
    with errors_as_lines({}):
        _decide("fail", task, as_email, comment, None, as_json)


@app.command("retry")
def retry(
    task: str = TASK, as_email: str = AS_OPTION, comment: str = COMMENT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:  # fmt: skip
    """Retry an escalated failed step once its cause is fixed (the run resumes from it)."""
    with errors_as_lines({}):
        _decide("retry", task, as_email, comment, None, as_json)


@app.command("reassign")
def reassign(
    task: str = TASK,
    to_users: list[str] = typer.Option([], "--to", help="an active user (email); repeatable"),
    to_roles: list[str] = typer.Option([], "--to-role", help="a role; repeatable"),
    remove: list[str] = typer.Option(
        None, "--remove", help="replace only this assignee (default: all); repeatable"
    ),
    as_email: str = typer.Option(
        None, "--as", help=AS_HELP + " (default: the token's user, or system:cli locally)"
    ),
    comment: str = COMMENT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Route a pending task to other people (e.g. its approver left); audited."""
    body = {
        "users": list(to_users),
        "roles": list(to_roles),
        "remove": list(remove) if remove else None,
        "comment": comment,
    }
    with errors_as_lines({"users": "--to", "roles": "--to-role"}), connect(act_as=as_email) as api:
        view = api.post(f"/tasks/{api.full_id('/tasks', task)}/reassign", body)
    _emit(view, as_json)
