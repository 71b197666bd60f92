"""What a run sees of its identity, grant and application: plain dicts taken when it starts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from grantflow import timestamps
from grantflow.access.models import Application, Grant, GroupMember, Identity, IdentityGroup

_SAME_GROUPS = "snapshots.same_groups"  # (a key of the session's `info`)
# an identity's groups, by name (`.where` the identities)
_GROUPS = (
    select(GroupMember.identity_id, IdentityGroup.display_name)
    .select_from(IdentityGroup)
    .join(GroupMember, GroupMember.group_id == IdentityGroup.id)
    .order_by(IdentityGroup.display_name)
)


@contextlib.contextmanager
def same_groups(session: Session, identity_ids: Iterable[str] = ()) -> Iterator[None]:
    """Within: each identity's groups are read once — those of `identity_ids` in one
    statement now, any other's at its first snapshot — for a batch of revocations, which
    changes no membership, instead of once per grant."""
    if _SAME_GROUPS in session.info:  # (already within one)
        yield
        return
    known: dict[str, list[str]] = {}
    wanted = set(identity_ids)
    if wanted:
        known = {identity_id: [] for identity_id in wanted}
        for identity_id, name in session.execute(
            _GROUPS.where(GroupMember.identity_id.in_(wanted))
        ):
            known[identity_id].append(name)
    session.info[_SAME_GROUPS] = known
    try:
        yield
    finally:
        session.info.pop(_SAME_GROUPS, None)


def _groups_of(session: Session, identity_id: str) -> list[str]:
    known: dict[str, list[str]] | None = session.info.get(_SAME_GROUPS)
    if known is not None and identity_id in known:
        return known[identity_id]
    groups = [
        name for _, name in session.execute(_GROUPS.where(GroupMember.identity_id == identity_id))
    ]
    if known is not None:
        known[identity_id] = groups
    return groups


def identity_snapshot(session: Session, identity: Identity) -> dict[str, Any]:
    manager = session.get(Identity, identity.manager_id) if identity.manager_id else None
    groups = _groups_of(session, identity.id)
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
