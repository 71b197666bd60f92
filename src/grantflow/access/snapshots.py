"""What a run sees of its identity, grant and application: plain dicts taken when it starts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from grantflow import timestamps
from grantflow.access.models import Application, Grant, GroupMember, Identity, IdentityGroup


def identity_snapshot(session: Session, identity: Identity) -> dict[str, Any]:
    manager = session.get(Identity, identity.manager_id) if identity.manager_id else None
    groups = session.execute(
        select(IdentityGroup.display_name)
        .join(GroupMember, GroupMember.group_id == IdentityGroup.id)
        .where(GroupMember.identity_id == identity.id)
        .order_by(IdentityGroup.display_name)
    ).scalars()
    return {
        "id": identity.id,
        "email": identity.email,
        "user_name": identity.user_name,
        "external_id": identity.external_id,
        "display_name": identity.display_name,
        "given_name": identity.given_name,
        "family_name": identity.family_name,
        "title": identity.title,
        "department": identity.department,
        "manager": (
            {"id": manager.id, "email": manager.email, "display_name": manager.display_name}
            if manager
            else None
        ),
        "start_date": identity.start_date.isoformat() if identity.start_date else None,
        "end_date": identity.end_date.isoformat() if identity.end_date else None,
        "lifecycle_state": identity.lifecycle_state,
        "active": identity.active,
        "attributes": identity.attributes or {},
        "groups": list(groups),
    }


def grant_snapshot(grant: Grant) -> dict[str, Any]:
    return {
        "id": grant.id,
        "role": grant.role or None,
        "status": grant.status,
        "justification": grant.justification,
        "expires_at": timestamps.rfc3339(grant.expires_at),
        "granted_by": grant.granted_by,
        "revoke_reason": grant.revoke_reason,
    }


def application_snapshot(app: Application) -> dict[str, Any]:
    return {"id": app.id, "name": app.name, "kind": app.kind, "labels": app.labels or {}}
