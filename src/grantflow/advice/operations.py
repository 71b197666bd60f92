"""The operations advice can offer: what a button says, the API call and CLI command that
perform it, the permission it needs and the kind of object it acts on.

An operation is rendered for one concrete object (`render`), so the console, the API and the CLI
show the same label, path and command. Templates name the object's ids in braces."""

from __future__ import annotations

import enum
import string
from dataclasses import dataclass
from typing import Any

from grantflow.auth.permissions import Permission

_FORMAT = string.Formatter()


class Subject(enum.StrEnum):
    """The kind of object an operation acts on."""

    RUN = "run"
    GRANT = "grant"
    WORKFLOW = "workflow"
    VERSION = "workflow_version"
    CONNECTION = "connection"
    INCIDENT = "incident"
    TASK = "task"


@dataclass(frozen=True)
class Operation:
    name: str  # stable id, e.g. "run.retry"
    label: str  # the button's text; the advice's words name it
    method: str
    path: str  # API path template, e.g. "/api/v1/runs/{run_id}/retry"
    cli: str  # CLI command template, e.g. "grantflow runs retry {run_id}"
    permission: Permission
    subject: Subject
    needs: str | None = None  # what the person must supply (a body), when not only a click

    def render(self, **ids: Any) -> dict[str, Any] | None:
        """The concrete action for one object; None when an id it needs is unknown."""
        if not _complete(self.path, ids):
            return None
        path = self.path.format(**ids)
        # the command is left out when it needs a name the caller does not know
        cli = self.cli.format(**ids) if _complete(self.cli, ids) else None
        action: dict[str, Any] = {
            "operation": self.name,
            "label": self.label,
            "method": self.method,
            "path": path,
            "cli": cli,
            "permission": str(self.permission),
        }
        if self.needs:
            action["needs"] = self.needs
        return action


def _complete(template: str, ids: dict[str, Any]) -> bool:
    wanted = {name for _, name, _, _ in _FORMAT.parse(template) if name}
    return all(ids.get(name) not in (None, "") for name in wanted)


def _op(*args: Any, **kwargs: Any) -> Operation:
    return Operation(*args, **kwargs)


OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        _op(
            "run.retry",
            "Retry",
            "POST",
            "/api/v1/runs/{run_id}/retry",
            "grantflow runs retry {run_id}",
            Permission.RUN_OPERATE,
            Subject.RUN,
        ),
        _op(
            "run.replay",
            "Replay",
            "POST",
            "/api/v1/runs/{run_id}/replay",
            "grantflow runs replay {run_id}",
            Permission.RUN_OPERATE,
            Subject.RUN,
        ),
        _op(
            "run.replay_latest",
            "Replay with latest",
            "POST",
            "/api/v1/runs/{run_id}/replay?latest=true",
            "grantflow runs replay {run_id} --latest",
            Permission.RUN_OPERATE,
            Subject.RUN,
        ),
        _op(
            "run.resume",
            "Resume",
            "POST",
            "/api/v1/runs/{run_id}/resume",
            "grantflow runs resume {run_id}",
            Permission.RUN_OPERATE,
            Subject.RUN,
        ),
        _op(
            "version.recompile",
            "Recompile",
            "POST",
            "/api/v1/workflows/{workflow_id}/versions/{version}/recompile",
            "grantflow workflows recompile {workflow_id} {version}",
            Permission.WORKFLOW_PUBLISH,
            Subject.VERSION,
        ),
        _op(
            "workflow.enable",
            "Enable",
            "POST",
            "/api/v1/workflows/{workflow_id}/enable",
            "grantflow workflows enable {workflow_id}",
            Permission.WORKFLOW_PUBLISH,
            Subject.WORKFLOW,
        ),
        _op(
            "grant.dispatch",
            "Dispatch",
            "POST",
            "/api/v1/grants/{grant_id}/dispatch",
            "grantflow grants dispatch {grant_id}",
            Permission.GRANT_WRITE,
            Subject.GRANT,
        ),
        _op(
            "grant.create",
            "Grant",
            "POST",
            "/api/v1/grants",
            "grantflow grants grant --identity {identity} --application {application}",
            Permission.GRANT_WRITE,
            Subject.GRANT,
            needs="the identity and the application (and role) to grant",
        ),
        _op(
            "version.publish",
            "Publish",
            "POST",
            "/api/v1/workflows/{workflow_id}/versions/{version}/publish",
            "grantflow workflows publish {workflow_id} {version}",
            Permission.WORKFLOW_PUBLISH,
            Subject.VERSION,
        ),
        _op(
            "run.cancel",
            "Cancel",
            "POST",
            "/api/v1/runs/{run_id}/cancel",
            "grantflow runs cancel {run_id}",
            Permission.RUN_OPERATE,
            Subject.RUN,
        ),
        _op(
            "incident.resolve",
            "Resolve",
            "POST",
            "/api/v1/incidents/{incident_id}/resolve",
            "grantflow incidents resolve {incident_id} --comment TEXT",
            Permission.INCIDENT_MANAGE,
            Subject.INCIDENT,
            needs="a comment saying how the access was removed",
        ),
        _op(
            "task.reassign",
            "Reassign",
            "POST",
            "/api/v1/tasks/{task_id}/reassign",
            "grantflow inbox reassign {task_id} --to EMAIL",
            Permission.TASK_REASSIGN,
            Subject.TASK,
            needs="the active users or roles to route it to",
        ),
        _op(
            "task.approve",
            "Approve",
            "POST",
            "/api/v1/tasks/{task_id}/approve",
            "grantflow inbox approve {task_id} --as EMAIL",
            Permission.WORKFLOW_TASK,
            Subject.TASK,
        ),
        _op(
            "task.submit",
            "Submit",
            "POST",
            "/api/v1/tasks/{task_id}/submit",
            "grantflow inbox submit {task_id} --as EMAIL",
            Permission.WORKFLOW_TASK,
            Subject.TASK,
        ),
        _op(
            "workflow.resume_safety",
            "Resume workflow",
            "POST",
            "/api/v1/workflows/{workflow_id}/resume-safety",
            "grantflow workflows resume-safety {workflow_id}",
            Permission.WORKFLOW_PUBLISH,
            Subject.WORKFLOW,
        ),
        _op(
            "spend_cap.set",
            "Adjust cap",
            "PUT",
            "/api/v1/spend-caps",
            "grantflow usage set-cap --kind KIND --period PERIOD --cap N [--workflow NAME]",
            Permission.WORKFLOW_PUBLISH,
            Subject.WORKFLOW,
            needs="the cap's kind, period and new value (and the workflow, for a workflow's cap)",
        ),
        _op(
            "connection.set_credential",
            "Replace credential",
            "PUT",
            "/api/v1/connections/{connection_id}/credential",
            "grantflow connections replace-credential {connection_id} --from-file FILE",
            Permission.CREDENTIAL_WRITE,
            Subject.CONNECTION,
            needs="the new credential (JSON with its secret fields)",
        ),
    )
}
