"""The home page: what needs the signed-in user's attention, one section per kind of thing,
each shown only to users holding the permission of the API route that lists it:

- waiting on me (`self`): approvals, tasks and escalated failures in my inbox;
- failed runs and stuck runs (`run:read`);
- connections needing reauthorisation or unhealthy (`connection:read`);
- overdue jobs and failing controls (`job:read`);
- open security incidents (`incident:read`).

Each item links to the page of the object to fix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from grantflow.access import incidents
from grantflow.access.models import Application
from grantflow.auth.models import User
from grantflow.auth.permissions import Permission
from grantflow.connections.models import Connection, ConnectionStatus
from grantflow.definitions.models import Workflow
from grantflow.engine import detail
from grantflow.engine.states import RunStatus
from grantflow.errors import NotFound
from grantflow.governance import controls
from grantflow.people import inbox
from grantflow.schedules import jobs
from grantflow.store.base import utcnow

SHOWN = 8  # items per section; the section links to the full list beyond that


@dataclass(frozen=True)
class Item:
    label: str
    url: str
    detail: str = ""
    tone: str = ""  # "bad" | "warn" | "": the chip's colour
    chip: str = ""


@dataclass
class Section:
    key: str
    title: str
    empty: str  # what the section says when nothing needs attention
    items: list[Item] = field(default_factory=list)
    more: bool = False  # more than SHOWN
    more_url: str | None = None


def _clip(text: str, length: int = 160) -> str:
    return text if len(text) <= length else text[: length - 1].rstrip() + "…"


def _names(
    session: Session, model: type[Workflow] | type[Application], ids: set[str]
) -> dict[str, str]:
    if not ids:
        return {}
    return dict(session.execute(select(model.id, model.name).where(model.id.in_(ids))).all())


def _waiting(session: Session, user: User) -> Section:
    page = inbox.inbox(session, user, limit=SHOWN)
    names = _names(session, Workflow, {t.workflow_id for t in page.items if t.workflow_id})
    items = []
    now = utcnow()
    for task in page.items:
        overdue = bool(task.due_at and task.due_at < now)
        where = names.get(task.workflow_id, "") if task.workflow_id else ""
        items.append(
            Item(
                label=task.title,
                url=f"/inbox/{task.id}",
                detail=where,
                chip="overdue" if overdue else task.kind,
                tone="bad" if overdue or task.kind == "escalation" else "",
            )
        )
    return Section(
        "waiting",
        "Waiting on me",
        "Nothing waits on you.",
        items,
        more=page.next_cursor is not None,
        more_url="/inbox",
    )


def _runs(
    session: Session,
    key: str,
    title: str,
    empty: str,
    *,
    status: RunStatus | None = None,
    stuck: bool | None = None,
) -> Section:
    page = detail.list_runs(session, status=status, stuck=stuck, limit=SHOWN)
    names = _names(session, Workflow, {r.workflow_id for r in page.items})
    items = []
    for run in page.items:
        reason = _clip(str((run.failure or {}).get("message") or "")) if key == "failed" else None
        if key == "stuck":
            reason = f"no progress since {run.last_progress_at:%Y-%m-%d %H:%M}Z"
        items.append(
            Item(
                label=f"{names.get(run.workflow_id, 'workflow')} · run {run.id[:8]}",
                url=f"/runs/{run.id}",
                detail=str(reason or ""),
                chip=run.status if key == "failed" else f"{run.status}, stuck",
                tone="bad" if key == "failed" else "warn",
            )
        )
    query = f"status={status}" if status else "stuck=true"
    return Section(
        key, title, empty, items, more=page.next_cursor is not None, more_url=f"/runs?{query}"
    )


def _failed_runs(session: Session) -> Section:
    section = _runs(session, "failed", "Failed runs", "No failed runs.", status=RunStatus.FAILED)
    timed_out = detail.list_runs(session, status=RunStatus.TIMED_OUT, limit=1)
    if timed_out.items:
        section.items.append(
            Item(
                label="Runs that timed out",
                url="/runs?status=timed_out",
                chip="timed_out",
                tone="bad",
            )
        )
    return section


def _connections(session: Session) -> Section:
    wanted = (ConnectionStatus.REAUTH_REQUIRED, ConnectionStatus.UNHEALTHY)
    rows = (
        session.execute(
            select(Connection)
            .where(Connection.status.in_(wanted), Connection.enabled.is_(True))
            .order_by(Connection.status_changed_at)
            .limit(SHOWN + 1)
        )
        .scalars()
        .all()
    )
    apps = _names(session, Application, {c.application_id for c in rows})
    items = [
        Item(
            label=f"{apps.get(c.application_id, 'application')} / {c.name}",
            url=f"/connections/{c.id}",
            detail=f"{c.status_reason or c.status} (since {c.status_changed_at:%Y-%m-%d %H:%M}Z)",
            chip=c.status,
            tone="bad" if c.status == ConnectionStatus.REAUTH_REQUIRED else "warn",
        )
        for c in rows[:SHOWN]
    ]
    return Section(
        "connections",
        "Connections needing attention",
        "Every connection is healthy.",
        items,
        more=len(rows) > SHOWN,
        more_url="/connections",
    )


def _jobs(session: Session) -> Section:
    page = jobs.list_jobs(session, overdue=True, limit=SHOWN)
    items = [
        Item(
            label=job.name,
            url=f"/jobs/{job.id}",
            detail=f"overdue since {job.overdue_since:%Y-%m-%d %H:%M}Z"
            if job.overdue_since
            else "",
            chip="overdue",
            tone="warn",
        )
        for job in page.items
    ]
    return Section(
        "jobs",
        "Overdue jobs",
        "No job is overdue.",
        items,
        more=page.next_cursor is not None,
        more_url="/jobs",
    )


def _incidents(session: Session) -> Section:
    page = incidents.list_incidents(session, status=incidents.IncidentStatus.OPEN, limit=SHOWN)
    items = [
        Item(
            label=f"{incident.system}: {incident.kind.replace('_', ' ')}",
            url=f"/incidents/{incident.id}",
            detail=_clip(incident.summary) + f" (raised {incident.created_at:%Y-%m-%d %H:%M}Z)",
            chip="open",
            tone="bad",
        )
        for incident in page.items
    ]
    return Section(
        "incidents",
        "Open security incidents",
        "No open security incident.",
        items,
        more=page.next_cursor is not None,
        more_url="/incidents",
    )


def _controls(session: Session) -> Section:
    section = Section("controls", "Controls failing", "Every control passed its last evaluation.")
    try:
        latest = controls.get_evaluation(session, "latest")
    except NotFound:
        section.empty = "No control has been evaluated yet."
        return section
    for result in latest.results or []:
        if not result.get("passed"):
            count = int(result.get("finding_count") or 0)
            section.items.append(
                Item(
                    label=str(result.get("title") or result.get("control")),
                    url="/controls",
                    detail=f"{count} finding{'s' * (count != 1)} at "
                    f"{latest.created_at:%Y-%m-%d %H:%M}Z",
                    chip="failing",
                    tone="bad",
                )
            )
    return section


def sections(
    session: Session, user: User | None, can: Callable[[Permission], bool]
) -> list[Section]:
    """The home page's sections the user may see, in the order they are shown."""
    shown: list[Section] = []
    if user is not None and can(Permission.SELF):
        shown.append(_waiting(session, user))
    if can(Permission.RUN_READ):
        shown.append(_failed_runs(session))
        shown.append(_runs(session, "stuck", "Stuck runs", "No run is stuck.", stuck=True))
    if can(Permission.CONNECTION_READ):
        shown.append(_connections(session))
    if can(Permission.JOB_READ):
        shown.append(_jobs(session))
    if can(Permission.INCIDENT_READ):
        shown.append(_incidents(session))
    if can(Permission.JOB_READ):
        shown.append(_controls(session))
    return shown
