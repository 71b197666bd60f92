"""`grantflow inbox ...`: approvals, human tasks and escalated failures waiting on people.

A decision is always someone's: `--as EMAIL` names the user the command acts as, with that
user's permissions (like their API token would), and the audit log names them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from sqlalchemy.orm import Session

from grantflow.auth.actor import Actor
from grantflow.auth.models import User
from grantflow.auth.permissions import Permission, permissions_for
from grantflow.auth.users import find_user_by_email
from grantflow.cli.context import JSON_OPTION, database, emit_json, emit_table, errors_as_lines, out
from grantflow.definitions.source import parse_text
from grantflow.definitions.workflows import find_workflow
from grantflow.errors import BadRequest, NotFound, PermissionDenied
from grantflow.people import decisions, inbox
from grantflow.people.decisions import Action
from grantflow.queue.database import DatabaseQueue

app = typer.Typer(
    help="Approvals and tasks waiting on people: list, show, and decide them.",
    no_args_is_help=True,
)

AS_HELP = "the user to act as (their email); the command has that user's permissions"
AS_OPTION = typer.Option(..., "--as", help=AS_HELP)
COMMENT_OPTION = typer.Option(None, "--comment", "-m", help="justification or reason")


def acting_user(session: Session, email: str) -> tuple[User, Actor]:
    """The user behind `--as`, and an actor with exactly that user's permissions."""
    user = find_user_by_email(session, email)
    if user is None:
        raise NotFound(
            f"no user with email {email}",
            next_action="check `grantflow users list`",
            target_type="user",
        )
    if not user.active:
        raise PermissionDenied(
            f"user {user.email} is deactivated and cannot act",
            next_action="act as an active user",
        )
    return user, Actor(label=user.email, user_id=user.id, permissions=permissions_for(user.roles))


def _data(data: str | None, data_file: Path | None) -> dict[str, Any] | None:
    if data is not None and data_file is not None:
        raise BadRequest("give --data or --data-file, not both")
    if data is None and data_file is None:
        return None
    if data_file is not None:
        try:
            text = data_file.read_text()
        except OSError as exc:
            raise BadRequest(f"--data-file: cannot read {data_file}: {exc.strerror}") from None
        parsed = parse_text(text, name=str(data_file))
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
    with errors_as_lines():
        if kind is not None and kind not in ("approval", "task", "escalation"):
            raise BadRequest(f"--kind: approval, task or escalation, not {kind!r}")
        with database() as db, db.transaction() as session:
            user, actor = acting_user(session, as_email)
            if not actor.permissions & {Permission.WORKFLOW_TASK, Permission.RUN_OPERATE}:
                actor.require(Permission.WORKFLOW_TASK)
            page = inbox.inbox(
                session,
                user,
                kind=kind,
                workflow_id=find_workflow(session, workflow).id if workflow else None,
                overdue=overdue,
                limit=limit,
            )
            views = [inbox.task_view(session, t, user) for t in page.items]
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
    task_id: str,
    as_email: str = typer.Option(None, "--as", help="say whether this user can act on it"),
    as_json: bool = JSON_OPTION,
) -> None:
    """A task: who it waits on, its form or failure, and the decisions so far."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        viewer = acting_user(session, as_email)[0] if as_email else None
        view = inbox.task_view(session, decisions.get_task(session, task_id), viewer)
    _emit(view, as_json)


def _decide(
    action: Action,
    task_id: str,
    as_email: str,
    comment: str | None,
    data: dict[str, Any] | None,
    as_json: bool,
) -> None:
    with database() as db:
        queue = DatabaseQueue(db)
        try:
            with db.transaction() as session:
                user, actor = acting_user(session, as_email)
                task = decisions.decide(
                    session, actor, queue, task_id, action, comment=comment, data=data, via="cli"
                )
                view = inbox.task_view(session, task, user)
        finally:
            queue.close()
    _emit(view, as_json)


@app.command("approve")
def approve(
    task_id: str,
    as_email: str = AS_OPTION,
    comment: str = COMMENT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Approve an approval (its run resumes once the stage's policy is met)."""
    with errors_as_lines():
        _decide(Action.APPROVE, task_id, as_email, comment, None, as_json)


@app.command("reject")
def reject(
    task_id: str,
    as_email: str = AS_OPTION,
    comment: str = COMMENT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Reject an approval: the run ends failed (class rejected) with your comment."""
    with errors_as_lines():
        _decide(Action.REJECT, task_id, as_email, comment, None, as_json)


@app.command("submit")
def submit(
    task_id: str,
    as_email: str = AS_OPTION,
    data: str = typer.Option(None, "--data", help="the form's data as a JSON object"),
    data_file: Path = typer.Option(None, "--data-file", help="the form's data (JSON or YAML)"),
    comment: str = COMMENT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Submit a task's form: the data is checked against it and becomes the step's output."""
    with errors_as_lines():
        _decide(Action.SUBMIT, task_id, as_email, comment, _data(data, data_file), as_json)


@app.command("skip")
def skip(
    task_id: str,
    as_email: str = AS_OPTION,
    comment: str = COMMENT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Skip the task's step (or an escalated failed step); the run goes on."""
    with errors_as_lines():
        _decide(Action.SKIP, task_id, as_email, comment, None, as_json)


@app.command("fail")
def fail(
    task_id: str,
    as_email: str = AS_OPTION,
    comment: str = typer.Option(..., "--comment", "-m", help="why the run should fail"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Fail the run at this task (or escalated step), with a reason."""
    with errors_as_lines():
        _decide(Action.FAIL, task_id, as_email, comment, None, as_json)


@app.command("retry")
def retry(
    task_id: str,
    as_email: str = AS_OPTION,
    comment: str = COMMENT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Retry an escalated failed step once its cause is fixed (the run resumes from it)."""
    with errors_as_lines():
        _decide(Action.RETRY, task_id, as_email, comment, None, as_json)


@app.command("reassign")
def reassign(
    task_id: str,
    to_users: list[str] = typer.Option([], "--to", help="an active user (email); repeatable"),
    to_roles: list[str] = typer.Option([], "--to-role", help="a role; repeatable"),
    remove: list[str] = typer.Option(
        None, "--remove", help="replace only this assignee (default: all); repeatable"
    ),
    as_email: str = typer.Option(
        None, "--as", help=AS_HELP + " (default: the CLI itself, system:cli)"
    ),
    comment: str = COMMENT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Route a pending task to other people (e.g. its approver left); audited."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        actor = acting_user(session, as_email)[1] if as_email else Actor.system("cli")
        task = decisions.reassign(
            session,
            actor,
            task_id,
            users=list(to_users),
            roles=list(to_roles),
            remove=list(remove) if remove else None,
            comment=comment,
        )
        view = inbox.task_view(session, task)
    _emit(view, as_json)
