"""Applications: the target systems Grantflow reaches. Their rules live here only."""

from __future__ import annotations

import enum
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, StringConstraints, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from grantflow import audit
from grantflow.access import references
from grantflow.access.models import Application
from grantflow.auth.actor import Actor
from grantflow.auth.models import User
from grantflow.auth.permissions import Permission
from grantflow.errors import Conflict, NotFound, ValidationError
from grantflow.store.ids import by_prefix
from grantflow.store.names import name_key
from grantflow.store.pagination import Page, decode_cursor, page_of
from grantflow.strict import NotNull


class ApplicationKind(enum.StrEnum):
    DIRECTORY = "directory"  # an identity provider or directory (Entra ID, Okta, Google)
    SAAS = "saas"  # a SaaS application reached over its API or SCIM
    INTERNAL = "internal"  # an in-house system
    OTHER = "other"


_LABEL_KEY = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Description = Annotated[str, StringConstraints(max_length=2000)]
Url = Annotated[HttpUrl, Field(max_length=2000)]
Labels = Annotated[
    dict[str, Annotated[str, StringConstraints(max_length=200)]], Field(max_length=50)
]


def _check_labels(labels: dict[str, str] | None) -> dict[str, str] | None:
    for key in labels or {}:
        if not _LABEL_KEY.match(key):
            raise ValueError(
                f"label key {key!r} must be 1-63 lowercase letters, digits, '_', '.' or '-', "
                "starting with a letter or digit"
            )
    return labels


def _check_name(name: str | None) -> str | None:
    if name is not None and any(ord(ch) < 32 for ch in name):
        raise ValueError("must not contain control characters")
    return name


class ApplicationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    description: Description = ""
    kind: ApplicationKind = ApplicationKind.SAAS
    homepage_url: Url | None = None
    owner_id: str | None = Field(default=None, description="id of the user who owns it")
    labels: Labels = Field(default_factory=dict)

    _name = field_validator("name")(_check_name)
    _labels = field_validator("labels")(_check_labels)


class ApplicationUpdate(BaseModel):
    """A partial update: only the fields sent are changed; `null` clears optional ones."""

    model_config = ConfigDict(extra="forbid")

    name: NotNull[Name] = None
    description: NotNull[Description] = None
    kind: NotNull[ApplicationKind] = None
    homepage_url: Url | None = None
    owner_id: str | None = None
    labels: NotNull[Labels] = None

    _name = field_validator("name")(_check_name)
    _labels = field_validator("labels")(_check_labels)


def get_application(session: Session, app_id: str) -> Application:
    app = session.get(Application, app_id) or by_prefix(session, Application, app_id, "application")
    if app is None:
        raise NotFound(
            f"application {app_id} does not exist", target_type="application", target_id=app_id
        )
    return app


def find_application(session: Session, id_or_name: str) -> Application:
    """By id, or else by exact name (case-insensitive)."""
    app = (
        session.get(Application, id_or_name)
        or session.execute(
            select(Application).where(Application.name_key == name_key(id_or_name))
        ).scalar_one_or_none()
        or by_prefix(session, Application, id_or_name, "application", named=True)
    )
    if app is None:
        raise NotFound(f"no application with id or name {id_or_name!r}", target_type="application")
    return app


def _check_unique_name(session: Session, name: str, own_id: str | None = None) -> None:
    clash = session.execute(
        select(Application).where(Application.name_key == name_key(name))
    ).scalar_one_or_none()
    if clash is not None and clash.id != own_id:
        raise Conflict(
            f"an application named {clash.name!r} already exists",
            next_action="choose another name, or update the existing application",
            existing_id=clash.id,
        )


def _check_owner(session: Session, owner_id: str | None) -> None:
    if owner_id is None:
        return
    owner = session.get(User, owner_id)
    problem = "does not exist" if owner is None else None if owner.active else "is deactivated"
    if problem:
        raise ValidationError(
            f"owner_id: user {owner_id} {problem}",
            details=[{"field": "body.owner_id", "message": f"user {problem}"}],
            next_action="name an active user as the owner",
        )


def create_application(session: Session, actor: Actor, data: ApplicationCreate) -> Application:
    actor.require(Permission.CONNECTION_WRITE)
    _check_unique_name(session, data.name)
    _check_owner(session, data.owner_id)
    values = data.model_dump(mode="json")
    app = Application(**values)
    session.add(app)
    session.flush()
    audit.record(session, actor, "application.created", "application", app.id, values)
    return app


def update_application(
    session: Session, actor: Actor, app_id: str, data: ApplicationUpdate
) -> Application:
    actor.require(Permission.CONNECTION_WRITE)
    app = get_application(session, app_id)
    sent = data.model_dump(mode="json", exclude_unset=True)
    if sent.get("name") is not None:
        _check_unique_name(session, sent["name"], own_id=app.id)
    if "owner_id" in sent:
        _check_owner(session, sent["owner_id"])
    for required in ("name", "kind", "description", "labels"):
        if required in sent and sent[required] is None:
            raise ValidationError(
                f"{required}: cannot be null",
                details=[{"field": f"body.{required}", "message": "cannot be null"}],
            )
    changes: dict[str, list[Any]] = {}
    for field, value in sent.items():
        if getattr(app, field) != value:
            changes[field] = [getattr(app, field), value]
            setattr(app, field, value)
    if changes:
        session.flush()
        audit.record(
            session, actor, "application.updated", "application", app.id, {"changes": changes}
        )
    return app


def delete_application(session: Session, actor: Actor, app_id: str) -> None:
    actor.require(Permission.CONNECTION_WRITE)
    app = get_application(session, app_id)
    used_by = references.referrers(session, "application", app.id)
    if used_by:
        raise Conflict(
            f"application {app.name!r} is still referenced by: {'; '.join(used_by)}",
            next_action="delete or re-point those first",
            referenced_by=used_by,
        )
    session.delete(app)
    audit.record(session, actor, "application.deleted", "application", app.id, {"name": app.name})


def list_applications(
    session: Session, *, name: str | None = None, cursor: str | None = None, limit: int = 50
) -> Page[Application]:
    stmt = select(Application)
    if name:
        stmt = stmt.where(Application.name_key.contains(name_key(name), autoescape=True))
    after = decode_cursor(cursor, str)
    if after is not None:
        stmt = stmt.where(Application.id > after)
    rows = session.execute(stmt.order_by(Application.id).limit(limit + 1)).scalars().all()
    return page_of(rows, limit, key=lambda a: a.id)
