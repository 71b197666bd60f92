"""A task as the inbox shows it: the API's task view (`people.inbox.task_view`), who else can
act, the decisions the signed-in user may take now (`people.decisions.ALLOWED`, when the
task says they can act), the form rendered from the task's JSON Schema, and — after a refused
decision — the error with each field's problem next to its input."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from grantflow.auth.models import User
from grantflow.auth.permissions import Permission
from grantflow.console import schema_form
from grantflow.errors import GrantflowError
from grantflow.people import inbox
from grantflow.people.decisions import ALLOWED
from grantflow.people.models import Task
from grantflow.people.tasks import TaskKind, TaskStatus

# the order and wording of the decision buttons
LABELS = {
    "approve": "Approve",
    "reject": "Reject",
    "submit": "Submit",
    "skip": "Skip",
    "fail": "Fail",
    "retry": "Retry",
}
ORDER = ("approve", "reject", "submit", "retry", "skip", "fail")


@dataclass
class Refusal:
    """What a refused decision or reassign left to show on the task."""

    error: GrantflowError
    form: str = "decide"  # which form it belongs to: decide | reassign
    typed: dict[str, Any] = field(default_factory=dict)  # the task form's inputs as sent
    comment: str = ""


@dataclass
class TaskCard:
    task: dict[str, Any]
    actions: list[tuple[str, str]]  # (action, label) the user may take now
    others: list[str]  # who else can act
    fields: list[schema_form.FormField]
    form_errors: list[str]  # problems of the form as a whole
    input_errors: dict[str, list[str]]  # problems of the comment, users, roles inputs
    reassign: bool  # the user may reassign it (task:reassign, still pending)
    refusal: Refusal | None = None

    @property
    def pending(self) -> bool:
        return bool(self.task["status"] == TaskStatus.PENDING)


def card(
    session: Session,
    task: Task,
    user: User | None,
    can: Callable[[str], bool],
    refusal: Refusal | None = None,
) -> TaskCard:
    view = inbox.task_view(session, task, user)
    actions: list[tuple[str, str]] = []
    if view["you_can_act"]:
        allowed = {str(a) for a in ALLOWED[task.kind]}
        actions = [(a, LABELS[a]) for a in ORDER if a in allowed]
    me = user.email if user is not None else None
    others = [email for email in view["can_act"] if email != me]
    by_field: dict[str, list[str]] = {}
    by_input: dict[str, list[str]] = {}
    general: list[str] = []
    typed: dict[str, Any] = {}
    if refusal is not None:
        if refusal.form == "decide":
            typed = refusal.typed
        by_field, by_input, general = schema_form.field_errors(
            refusal.error.details, own=("comment", "users", "roles")
        )
    fields = (
        schema_form.fields(task.form, typed or None, by_field) if task.kind == TaskKind.TASK else []
    )
    return TaskCard(
        task=view,
        actions=actions,
        others=others,
        fields=fields,
        form_errors=general,
        input_errors=by_input,
        reassign=view["status"] == TaskStatus.PENDING and can(Permission.TASK_REASSIGN),
        refusal=refusal,
    )
