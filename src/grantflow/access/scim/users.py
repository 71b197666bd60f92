"""/Users: SCIM users are identities, written only through `grantflow.access.identities`.

Creating an active user emits identity_joined; a change to a mapped attribute of an active user
emits identity_moved; `active: false` or DELETE emits identity_left, which revokes the
identity's grants. A deleted user is gone from /scim/v2 (404) and its userName is free again.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from scim2_models import (
    Context,
    InvalidValueException,
    NotFoundException,
    PatchOp,
    Resource,
)
from scim2_models.path import CompareOperator
from sqlalchemy import (
    Boolean,
    ColumnElement,
    Text,
    cast,
    exists,
    func,
    literal,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from grantflow import audit
from grantflow.access import identities
from grantflow.access.models import GroupMember, Identity, IdentityGroup
from grantflow.access.scim import entra, groups, mapping
from grantflow.access.scim.filters import (
    UNKNOWN,
    Catalog,
    Column,
    Compiled,
    Constant,
    Special,
    string_clause,
    text_contains,
)
from grantflow.access.scim.patch import apply_patch
from grantflow.access.scim.protocol import check_if_match, read
from grantflow.access.scim.resources import (
    ENTERPRISE_SCHEMA,
    USER_SCHEMA,
    UserResource,
    etag,
)
from grantflow.access.scim.search import Kind
from grantflow.auth.actor import Actor
from grantflow.queue.interface import Queue

_CORE = USER_SCHEMA.lower()
_ENTERPRISE = ENTERPRISE_SCHEMA.lower()


def _alive() -> ColumnElement[bool]:
    return Identity.deleted_at.is_(None)


def _email(op: CompareOperator, value: Any, case_exact: bool) -> Compiled:
    """emails.value: the identity keeps one email in a column; the others live only in the
    pushed representation, which SQL can search as text to narrow the candidates."""
    if not isinstance(value, str) or op not in (
        CompareOperator.eq,
        CompareOperator.co,
        CompareOperator.sw,
        CompareOperator.ew,
    ):
        return UNKNOWN
    in_representation: ColumnElement[bool] | None = text_contains(Identity.scim, value)
    if in_representation is None:
        return UNKNOWN
    if op == CompareOperator.eq:  # (an identity provider's lookup: an index on PostgreSQL)
        in_representation = EmailsHold(value)
    return Compiled(
        string_clause(Identity.email, op, value, False).clause | in_representation, False
    )


class EmailsHold(ColumnElement[bool]):
    """The SCIM representation pushed lists `value` among its e-mails, whatever the case. On
    PostgreSQL its lower-cased `emails[*].value` array contains it, which an index answers
    (0031); elsewhere the representation's text holds it (a candidate, checked again). Both
    clauses are children, so a cached statement takes each lookup's own value."""

    type = Boolean()
    inherit_cache = True
    _traverse_internals = [
        ("postgresql", InternalTraversal.dp_clauseelement),
        ("other", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, value: str) -> None:
        wanted = cast(literal(json.dumps([value.lower()]), Text), JSONB)
        self.postgresql = _emails_of_scim().op("@>")(wanted)
        found = text_contains(Identity.scim, value)
        assert found is not None  # (`_email` builds this only for a value it can find so)
        self.other = found


def _emails_of_scim() -> ColumnElement[Any]:
    """The expression migration 0031 indexes: the e-mails' values, lower-cased, as JSON."""
    values = func.jsonb_path_query_array(Identity.scim, literal_column("'$.emails[*].value'"))
    return cast(func.lower(cast(values, Text)), JSONB)


@compiles(EmailsHold, "postgresql")
def _emails_hold_postgresql(element: EmailsHold, compiler: SQLCompiler, **kw: Any) -> str:
    return str(compiler.process(element.postgresql, **kw))


@compiles(EmailsHold)
def _emails_hold(element: EmailsHold, compiler: SQLCompiler, **kw: Any) -> str:
    return str(compiler.process(element.other, **kw))


def _in_group(op: CompareOperator, value: Any, case_exact: bool) -> Compiled:
    if not isinstance(value, str) or op not in (CompareOperator.eq, CompareOperator.ne):
        return UNKNOWN
    member = exists().where(GroupMember.identity_id == Identity.id, GroupMember.group_id == value)
    return Compiled(member if op == CompareOperator.eq else ~member, True)


def _has_groups() -> Compiled:
    return Compiled(exists().where(GroupMember.identity_id == Identity.id), True)


CATALOG: Catalog = {
    f"{_CORE}:id": Column(Identity.id, "string"),
    f"{_CORE}:username": Column(Identity.user_name, "string"),
    f"{_CORE}:externalid": Column(Identity.external_id, "string"),
    # a user pushed without displayName shows none, while the column holds the default
    f"{_CORE}:displayname": Column(Identity.display_name, "string", exact=False),
    f"{_CORE}:name.givenname": Column(Identity.given_name, "string"),
    f"{_CORE}:name.familyname": Column(Identity.family_name, "string"),
    f"{_CORE}:title": Column(Identity.title, "string"),
    f"{_CORE}:active": Column(Identity.active, "boolean", exact=False),
    f"{_CORE}:emails.value": Special(_email),
    f"{_CORE}:groups.value": Special(_in_group, _has_groups),
    f"{_CORE}:meta.created": Column(Identity.created_at, "datetime"),
    f"{_CORE}:meta.lastmodified": Column(Identity.updated_at, "datetime"),
    f"{_CORE}:meta.resourcetype": Constant("User"),
    f"{_ENTERPRISE}:department": Column(Identity.department, "string"),
    f"{_ENTERPRISE}:manager.value": Column(Identity.manager_id, "string"),
}


def _groups_of(session: Session, ids: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = defaultdict(list)
    if not ids:
        return found
    rows = session.execute(
        select(GroupMember.identity_id, IdentityGroup.id, IdentityGroup.display_name)
        .join(IdentityGroup, IdentityGroup.id == GroupMember.group_id)
        .where(GroupMember.identity_id.in_(ids))
        .order_by(IdentityGroup.display_name, IdentityGroup.id)
    )
    for identity_id, group_id, name in rows:
        found[identity_id].append((group_id, name))
    return found


def render(
    session: Session, rows: Sequence[Identity], base_url: str, with_groups: bool
) -> list[Resource[Any]]:
    groups = _groups_of(session, [i.id for i in rows]) if with_groups else None
    return [
        mapping.user_resource(i, base_url, groups.get(i.id, []) if groups is not None else None)
        for i in rows
    ]


USERS = Kind(
    name="User",
    endpoint="Users",
    model=UserResource,
    table=Identity,
    alive=_alive,
    catalog=CATALOG,
    link="groups",
    render=render,
)


def find(session: Session, user_id: str) -> Identity:
    identity = session.get(Identity, user_id)
    if identity is None or identity.deleted_at is not None:
        raise NotFoundException(detail=f"no user with id {user_id!r}")
    return identity


def get(session: Session, user_id: str, base_url: str, with_groups: bool = True) -> Resource[Any]:
    session.flush()  # after a write: meta (version, lastModified) as stored
    identity = find(session, user_id)
    return render(session, [identity], base_url, with_groups)[0]


def _check_manager(session: Session, fields: identities.IdentityFields, own_id: str | None) -> None:
    """manager.value must be the id of a user served here (RFC 7643 §4.3)."""
    if fields.manager is None:
        return
    manager = session.get(Identity, fields.manager)
    if manager is None or manager.deleted_at is not None:
        raise InvalidValueException(
            detail=f"{ENTERPRISE_SCHEMA}:manager.value: no user with id {fields.manager!r}"
        )
    if manager.id == own_id:
        raise InvalidValueException(
            detail=f"{ENTERPRISE_SCHEMA}:manager.value: a user cannot be their own manager"
        )


def create(
    session: Session, actor: Actor, queue: Queue, payload: Any, base_url: str
) -> UserResource:
    user = read(
        UserResource, entra.user_payload(payload, base_url), Context.RESOURCE_CREATION_REQUEST
    )
    fields = mapping.identity_fields(user)
    _check_manager(session, fields, None)
    mapping.normalise(user, fields)
    identity = identities.create_identity(
        session, actor, queue, fields, source="scim", scim=mapping.stored(user)
    )
    session.flush()  # the lifecycle state settled: meta.lastModified as stored
    return mapping.user_resource(identity, base_url, [])


def _write(
    session: Session, actor: Actor, queue: Queue, identity: Identity, user: UserResource
) -> None:
    fields = mapping.identity_fields(user)
    _check_manager(session, fields, identity.id)
    mapping.normalise(user, fields)
    before = identity.scim or {}
    after = mapping.stored(user)
    _, changes = identities.update_identity(session, actor, queue, identity.id, fields, scim=after)
    if not changes and after != before:
        # only attributes without a column changed: no lifecycle event, but a new version
        identity.version += 1
        changed = sorted(k for k in {*before, *after} if before.get(k) != after.get(k))
        audit.record(
            session,
            actor,
            "identity.updated",
            "identity",
            identity.id,
            {"scim_attributes": changed, "source": "scim"},
        )


def replace(
    session: Session,
    actor: Actor,
    queue: Queue,
    user_id: str,
    payload: Any,
    base_url: str,
    if_match: str | None = None,
) -> Resource[Any]:
    identity = find(session, user_id)
    check_if_match(if_match, etag(identity.version))
    current = mapping.user_resource(identity, base_url)
    user = read(
        UserResource, entra.user_payload(payload, base_url), Context.RESOURCE_REPLACEMENT_REQUEST
    )
    if user.replace(current):
        _write(session, actor, queue, identity, user)
    return get(session, user_id, base_url)


def patch(
    session: Session,
    actor: Actor,
    queue: Queue,
    user_id: str,
    payload: Any,
    base_url: str,
    if_match: str | None = None,
) -> Resource[Any]:
    identity = find(session, user_id)
    check_if_match(if_match, etag(identity.version))
    current = mapping.user_resource(identity, base_url)
    operations = read(
        PatchOp[UserResource],
        entra.patch_payload(payload, base_url),
        Context.RESOURCE_PATCH_REQUEST,
    )
    if apply_patch(operations, current):
        _write(session, actor, queue, identity, current)
    return get(session, user_id, base_url)


def delete(
    session: Session, actor: Actor, queue: Queue, user_id: str, if_match: str | None = None
) -> None:
    identity = find(session, user_id)
    check_if_match(if_match, etag(identity.version))
    identities.delete_identity(session, actor, queue, identity.id)
    groups.drop_member(session, actor, identity.id)
