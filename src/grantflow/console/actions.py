"""The advice table's operations as console actions: each operation the API offers (Retry,
Replay with latest, Dispatch …) is, on a console page, either a form POST to the console route
that calls the same service function, or a link to the page where it is done. Every
operation of `grantflow.advice.OPERATIONS` has one entry here (a test checks it).

`shown(...)` renders an advice action for a page, or None when the user may not take it: a
button the user may not use is never shown.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from grantflow import advice, audit
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.errors import PermissionDenied
from grantflow.store.database import Database

_FORMAT = string.Formatter()

# operation -> the console route that performs it (a form POST)
FORMS: dict[str, str] = {
    "run.retry": "/runs/{run_id}/retry",
    "run.replay": "/runs/{run_id}/replay",
    "run.replay_latest": "/runs/{run_id}/replay-latest",
    "run.resume": "/runs/{run_id}/resume",
    "run.cancel": "/runs/{run_id}/cancel",
    "grant.dispatch": "/runs/{run_id}/dispatch-grant",
    "workflow.resume_safety": "/workflows/{workflow_id}/resume-safety",
}

# operation -> the console page where it is done (it needs more than a click there)
PAGES: dict[str, str] = {
    "task.reassign": "/inbox/{task_id}",
    "task.approve": "/inbox/{task_id}",
    "task.submit": "/inbox/{task_id}",
    "connection.set_credential": "/connections/{connection_id}",
    "version.recompile": "/workflows/{workflow_id}",
    "version.publish": "/workflows/{workflow_id}",
    "workflow.enable": "/workflows/{workflow_id}",
    "incident.resolve": "/incidents/{incident_id}",
    "grant.create": "/grants",
    "spend_cap.set": "/usage",
}


# operations of the console that the advice never offers as a next action
OWN_FORMS: dict[str, tuple[str, str, Permission]] = {
    "run.pause": ("Pause", "/runs/{run_id}/pause", Permission.RUN_OPERATE),
}


@dataclass(frozen=True)
class ConsoleAction:
    """One button (`method` "post": a form to `url`) or link (`method` "get")."""

    operation: str
    label: str
    method: str
    url: str
    permission: str
    needs: str | None = None


def _complete(template: str, ids: dict[str, Any]) -> bool:
    wanted = {name for _, name, _, _ in _FORMAT.parse(template) if name}
    return all(ids.get(name) not in (None, "") for name in wanted)


def console_action(operation: str | None, **ids: Any) -> ConsoleAction | None:
    """The console form or page of `operation` for one object; None when unknown or when an
    id it needs is missing."""
    if operation is None:
        return None
    own = OWN_FORMS.get(operation)
    if own is not None:
        label, path, permission = own
        if not _complete(path, ids):
            return None
        return ConsoleAction(operation, label, "post", path.format(**ids), str(permission))
    if operation not in advice.OPERATIONS:
        return None
    op = advice.OPERATIONS[operation]
    for table, method in ((FORMS, "post"), (PAGES, "get")):
        template = table.get(operation)
        if template is not None:
            if not _complete(template, ids):
                return None
            return ConsoleAction(
                operation=operation,
                label=op.label,
                method=method,
                url=template.format(**ids),
                permission=str(op.permission),
                needs=op.needs,
            )
    return None


def shown(
    action: dict[str, Any] | None, can: Callable[[str], bool], **ids: Any
) -> ConsoleAction | None:
    """An advice action (`{"operation": ...}`, as the API returns it) as the user may take it
    on a console page: None when they lack its permission."""
    if not action:
        return None
    found = console_action(action.get("operation"), **ids)
    if found is None or not can(found.permission):
        return None
    return found


@contextmanager
def refusals_audited(database: Database, actor: Actor, path: str, method: str) -> Iterator[None]:
    """Around a console action: a refusal by the service itself (e.g. acting on a task kind
    the user may not act on) is audited as `console.forbidden`, as the page guard's are."""
    try:
        yield
    except PermissionDenied as error:
        with database.transaction() as session:
            _record(session, actor, path, method, error)
        raise


def _record(
    session: Session, actor: Actor, path: str, method: str, error: PermissionDenied
) -> None:
    audit.record(
        session,
        actor,
        "console.forbidden",
        "console_page",
        path,
        {"method": method, "reason": error.message, "code": error.code},
    )
