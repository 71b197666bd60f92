"""/Groups: identity groups and their members.

Members are users (identities) only; Grantflow keeps no nested groups. A membership change of
an active identity emits identity_moved for it with details {"changed": ["groups"]}, so mover
workflows see group changes as they see attribute changes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from scim2_models import (
    Context,
    InvalidValueException,
    NotFoundException,
    PatchOp,
    Resource,
    UniquenessException,
)
from scim2_models.path import CompareOperator
from sqlalchemy import ColumnElement, delete, exists, func, select, true
from sqlalchemy.orm import Session

from grantflow import audit
from grantflow.access import lifecycle
from grantflow.access.lifecycle import EventKind, LifecycleState
from grantflow.access.models import GroupMember, Identity, IdentityGroup
from grantflow.access.scim import mapping
from grantflow.access.scim.filters import UNKNOWN, Catalog, Column, Compiled, Constant, Special
from grantflow.access.scim.patch import apply_patch
from grantflow.access.scim.protocol import check_if_match, read
from grantflow.access.scim.resources import GROUP_SCHEMA, GroupResource, etag
from grantflow.access.scim.search import Kind
from grantflow.auth.actor import Actor
from grantflow.queue.interface import Queue

_CORE = GROUP_SCHEMA.lower()


def _alive() -> ColumnElement[bool]:
    return true()


def _live_member(*conditions: ColumnElement[bool]) -> Any:
    return (
        exists()
        .where(GroupMember.group_id == IdentityGroup.id, *conditions)
        .where(Identity.id == GroupMember.identity_id, Identity.deleted_at.is_(None))
    )


def _member(op: CompareOperator, value: Any, case_exact: bool) -> Compiled:
    if not isinstance(value, str) or op not in (CompareOperator.eq, CompareOperator.ne):
        return UNKNOWN
    member = _live_member(GroupMember.identity_id == value)
    # ne reads "no member is value", as scim2-models evaluates it on multi-valued attributes
    return Compiled(member if op == CompareOperator.eq else ~member, True)


def _has_members() -> Compiled:
    return Compiled(_live_member(), True)


CATALOG: Catalog = {
    f"{_CORE}:id": Column(IdentityGroup.id, "string"),
    f"{_CORE}:displayname": Column(IdentityGroup.display_name, "string"),
    f"{_CORE}:externalid": Column(IdentityGroup.external_id, "string"),
    f"{_CORE}:members.value": Special(_member, _has_members),
    f"{_CORE}:meta.created": Column(IdentityGroup.created_at, "datetime"),
    f"{_CORE}:meta.lastmodified": Column(IdentityGroup.updated_at, "datetime"),
    f"{_CORE}:meta.resourcetype": Constant("Group"),
}


def _members_of(
    session: Session, groups: Sequence[IdentityGroup]
) -> dict[str, list[tuple[str, str]]]:
    """(identity id, display name) of each group's live members, in the order last pushed."""
    found: dict[str, list[tuple[str, str]]] = defaultdict(list)
    if not groups:
        return found
    rows = session.execute(
        select(GroupMember.group_id, Identity.id, Identity.display_name)
        .join(Identity, Identity.id == GroupMember.identity_id)
        .where(GroupMember.group_id.in_([g.id for g in groups]), Identity.deleted_at.is_(None))
        .order_by(Identity.id)
    )
    for group_id, identity_id, name in rows:
        found[group_id].append((identity_id, name))
    for group in groups:
        order = mapping.member_order(group.scim or {})
        found[group.id].sort(key=lambda m: (order.get(m[0], len(order)), m[0]))
    return found


def render(
    session: Session, rows: Sequence[IdentityGroup], base_url: str, with_members: bool
) -> list[Resource[Any]]:
    members = _members_of(session, rows) if with_members else None
    return [
        mapping.group_resource(g, base_url, members.get(g.id, []) if members is not None else None)
        for g in rows
    ]


GROUPS = Kind(
    name="Group",
    endpoint="Groups",
    model=GroupResource,
    table=IdentityGroup,
    alive=_alive,
    catalog=CATALOG,
    link="members",
    render=render,
)


def find(session: Session, group_id: str) -> IdentityGroup:
    group = session.get(IdentityGroup, group_id)
    if group is None:
        raise NotFoundException(detail=f"no group with id {group_id!r}")
    return group


def get(session: Session, group_id: str, base_url: str, with_members: bool = True) -> Any:
    session.flush()  # after a write: meta (version, lastModified) as stored
    return render(session, [find(session, group_id)], base_url, with_members)[0]


def _names(session: Session, group: GroupResource, own_id: str | None) -> tuple[str, str | None]:
    """The display name (unique, ignoring case) and external id a group can be stored with."""
    name = (group.display_name or "").strip()
    if not name or len(name) > 200:
        raise InvalidValueException(detail="displayName: must be 1 to 200 characters")
    if group.external_id is not None and len(group.external_id) > 320:
        raise InvalidValueException(detail="externalId: must be at most 320 characters")
    clash = session.execute(
        select(IdentityGroup.id).where(
            func.lower(IdentityGroup.display_name) == name.lower(), IdentityGroup.id != own_id
        )
    ).scalar_one_or_none()
    if clash is not None:
        raise UniquenessException(detail=f"displayName: a group named {name!r} already exists")
    return name, group.external_id


def _member_ids(session: Session, group: GroupResource) -> list[str]:
    """The identity ids a group's members name; each must be a user served here."""
    values = [m.value for m in group.members or []]
    live: set[str] = set()
    named = sorted({v for v in values if v})
    for start in range(0, len(named), 500):  # one query per 500 members, not one per member
        live.update(
            session.execute(
                select(Identity.id).where(
                    Identity.id.in_(named[start : start + 500]), Identity.deleted_at.is_(None)
                )
            ).scalars()
        )
    for member in group.members or []:
        if (member.type or "User").lower() != "user" or member.value not in live:
            raise InvalidValueException(
                detail=f"members: no user with id {member.value!r} (members must be users; "
                "nested groups are not supported)"
            )
    return list(dict.fromkeys(v for v in values if v))


def _moved(session: Session, actor: Actor, queue: Queue, identity: Identity) -> None:
    """A membership change of an active identity is a move, as in `update_identity`."""
    identity.lifecycle_state = LifecycleState.MOVER
    event = lifecycle.emit(
        session, actor, queue, EventKind.IDENTITY_MOVED, identity, details={"changed": ["groups"]}
    )
    if all("run_id" not in d for d in event.dispatch):
        identity.lifecycle_state = LifecycleState.ACTIVE


def _set_members(
    session: Session, actor: Actor, queue: Queue, group: IdentityGroup, wanted: Sequence[str]
) -> tuple[list[str], list[str]]:
    current = set(
        session.execute(
            select(GroupMember.identity_id).where(GroupMember.group_id == group.id)
        ).scalars()
    )
    added = [i for i in wanted if i not in current]
    removed = sorted(current - set(wanted))
    if removed:
        session.execute(
            delete(GroupMember).where(
                GroupMember.group_id == group.id, GroupMember.identity_id.in_(removed)
            )
        )
    session.add_all(GroupMember(group_id=group.id, identity_id=i) for i in added)
    session.flush()
    for identity_id in sorted({*added, *removed}):
        identity = session.get(Identity, identity_id)
        if identity is not None and identity.active and identity.deleted_at is None:
            _moved(session, actor, queue, identity)
    return added, removed


def create(session: Session, actor: Actor, queue: Queue, payload: Any, base_url: str) -> Any:
    resource = read(GroupResource, payload, Context.RESOURCE_CREATION_REQUEST)
    name, external_id = _names(session, resource, None)
    members = _member_ids(session, resource)
    resource.display_name = name
    group = IdentityGroup(
        display_name=name, external_id=external_id, scim=mapping.stored_group(resource)
    )
    session.add(group)
    session.flush()
    added, _ = _set_members(session, actor, queue, group, members)
    audit.record(
        session,
        actor,
        "identity_group.created",
        "identity_group",
        group.id,
        {"display_name": name, "external_id": external_id, "members_added": added},
    )
    return get(session, group.id, base_url)


def _write(
    session: Session, actor: Actor, queue: Queue, group: IdentityGroup, resource: GroupResource
) -> None:
    name, external_id = _names(session, resource, group.id)
    members = _member_ids(session, resource)
    resource.display_name = name
    changes: dict[str, list[Any]] = {}
    for field, value in (("display_name", name), ("external_id", external_id)):
        if getattr(group, field) != value:
            changes[field] = [getattr(group, field), value]
            setattr(group, field, value)
    blob = mapping.stored_group(resource)
    scim_changed = blob != (group.scim or {})
    group.scim = blob
    added, removed = _set_members(session, actor, queue, group, members)
    if not (changes or scim_changed or added or removed):
        return
    group.version += 1
    audit.record(
        session,
        actor,
        "identity_group.updated",
        "identity_group",
        group.id,
        {"changes": changes, "members_added": added, "members_removed": removed},
    )


def replace(
    session: Session,
    actor: Actor,
    queue: Queue,
    group_id: str,
    payload: Any,
    base_url: str,
    if_match: str | None = None,
) -> Any:
    group = find(session, group_id)
    check_if_match(if_match, etag(group.version))
    current = get(session, group_id, base_url)
    resource = read(GroupResource, payload, Context.RESOURCE_REPLACEMENT_REQUEST)
    if resource.replace(current):
        _write(session, actor, queue, group, resource)
    return get(session, group_id, base_url)


def patch(
    session: Session,
    actor: Actor,
    queue: Queue,
    group_id: str,
    payload: Any,
    base_url: str,
    if_match: str | None = None,
    with_members: bool = True,
) -> Any:
    group = find(session, group_id)
    check_if_match(if_match, etag(group.version))
    current = get(session, group_id, base_url)
    operations = read(PatchOp[GroupResource], payload, Context.RESOURCE_PATCH_REQUEST)
    if apply_patch(operations, current):
        _write(session, actor, queue, group, current)
    return get(session, group_id, base_url, with_members)


def delete_group(
    session: Session, actor: Actor, queue: Queue, group_id: str, if_match: str | None = None
) -> None:
    group = find(session, group_id)
    check_if_match(if_match, etag(group.version))
    _, removed = _set_members(session, actor, queue, group, [])
    audit.record(
        session,
        actor,
        "identity_group.deleted",
        "identity_group",
        group.id,
        {"display_name": group.display_name, "members_removed": removed},
    )
    session.delete(group)
    session.flush()


def drop_member(session: Session, actor: Actor, identity_id: str) -> None:
    """A deleted user leaves its groups (no identity_moved: it left)."""
    groups = (
        session.execute(
            select(IdentityGroup)
            .join(GroupMember, GroupMember.group_id == IdentityGroup.id)
            .where(GroupMember.identity_id == identity_id)
        )
        .scalars()
        .all()
    )
    if not groups:
        return
    session.execute(delete(GroupMember).where(GroupMember.identity_id == identity_id))
    for group in groups:
        group.version += 1
        audit.record(
            session,
            actor,
            "identity_group.updated",
            "identity_group",
            group.id,
            {"members_removed": [identity_id], "reason": "the user was deleted"},
        )
