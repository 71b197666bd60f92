"""Identity and group rows as SCIM resources, and SCIM users as identity fields.

A user's `scim` column keeps the representation last pushed (so attributes Grantflow has no
column for, and unknown extensions, round-trip). The columns stay the source of truth for what
they hold: when a column no longer says what the pushed representation implies (someone changed
the identity through the REST API), the column wins in the representation served.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError as PydanticValidationError
from scim2_models import (
    Email,
    EnterpriseUser,
    GroupMember,
    GroupMembership,
    InvalidValueException,
    Manager,
    Meta,
    Name,
)

from grantflow.access.identities import IdentityFields, normalise_email
from grantflow.access.models import Identity, IdentityGroup
from grantflow.access.scim.resources import (
    ENTERPRISE_SCHEMA,
    GROUP_SCHEMA,
    POLICY,
    USER_SCHEMA,
    GroupResource,
    UserResource,
    etag,
    location,
)

# what each identity field is called in SCIM (for error messages)
ATTRIBUTES = {
    "email": "emails.value",
    "user_name": "userName",
    "external_id": "externalId",
    "display_name": "displayName",
    "given_name": "name.givenName",
    "family_name": "name.familyName",
    "title": "title",
    "department": f"{ENTERPRISE_SCHEMA}:department",
    "manager": f"{ENTERPRISE_SCHEMA}:manager.value",
    "active": "active",
}
# never stored: the server's own attributes, and the password (Grantflow authenticates nobody)
_NOT_STORED = ("id", "meta", "groups", "password")


def _strip(value: str | None) -> str | None:
    return value.strip() if value is not None else None


def _kind(entry: Any) -> str:
    kind = getattr(entry, "type", None)
    return str(getattr(kind, "value", kind) or "").lower()


def primary_email(user: UserResource) -> Email | None:
    """The email the identity is reached at: the primary one, else the work one, else the first."""
    emails = [e for e in user.emails or [] if e.value]
    return (
        next((e for e in emails if e.primary), None)
        or next((e for e in emails if _kind(e) == "work"), None)
        or (emails[0] if emails else None)
    )


def implied(user: UserResource) -> dict[str, Any]:
    """The identity fields a SCIM user stands for, before validation.

    A user pushed without displayName gets the identity's usual default (its names, else its
    userName); a user pushed without `active` is active, on creation as on replacement."""
    name = user.name or Name()
    enterprise = user[EnterpriseUser] or EnterpriseUser()
    given, family = _strip(name.given_name), _strip(name.family_name)
    user_name = _strip(user.user_name)
    email = primary_email(user)
    return {
        "user_name": user_name,
        "email": str(email.value) if email and email.value else None,
        "external_id": user.external_id,
        "display_name": _strip(user.display_name)
        or " ".join(n for n in (given, family) if n)
        or user_name,
        "given_name": given,
        "family_name": family,
        "title": _strip(user.title),
        "department": _strip(enterprise.department),
        "manager": enterprise.manager.value if enterprise.manager else None,
        "active": True if user.active is None else user.active,
    }


def identity_fields(user: UserResource) -> IdentityFields:
    """The identity fields of a SCIM user, every mapped field set (absent ones cleared).

    A value the identity cannot hold (an invalid email, a name over 200 characters) is a SCIM
    400 invalidValue naming the SCIM attribute."""
    try:
        return IdentityFields.model_validate(implied(user))
    except PydanticValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        message = str(error["msg"]).removeprefix("Value error, ")
        raise InvalidValueException(detail=f"{ATTRIBUTES.get(field, field)}: {message}") from None


def _same_email(pushed: str | None, column: str | None) -> bool:
    if pushed is None or column is None:
        return pushed == column
    if pushed.strip().lower() == column:
        return True
    try:
        return normalise_email(pushed) == column
    except ValueError:
        return False


def stored(user: UserResource) -> dict[str, Any]:
    """What the `scim` column keeps of a user or group: the representation, without the
    server's attributes and without a password."""
    data = user.model_dump(scim_policy=POLICY)
    for key in list(data):
        if key.lower() in _NOT_STORED:
            del data[key]
    return data


def stored_group(group: GroupResource) -> dict[str, Any]:
    data = group.model_dump(scim_policy=POLICY)
    for key in list(data):
        if key.lower() in ("id", "meta"):
            del data[key]
    return data


def normalise(user: UserResource, fields: IdentityFields) -> None:
    """Write back what the identity stores (whitespace stripped), so the representation kept
    in the `scim` column implies exactly the stored columns."""
    user.user_name = fields.user_name
    if user.display_name is not None:
        user.display_name = fields.display_name
    if user.name is not None:
        user.name.given_name = fields.given_name
        user.name.family_name = fields.family_name
    user.title = fields.title
    enterprise = user[EnterpriseUser]
    if enterprise is not None and enterprise.department is not None:
        enterprise.department = fields.department


def _meta(kind: str, base_url: str, endpoint: str, row: Identity | IdentityGroup) -> Meta:
    return Meta(
        resource_type=kind,
        created=row.created_at,
        last_modified=row.updated_at,
        location=location(base_url, endpoint, row.id),
        version=etag(row.version),
    )


def _schemas(user: UserResource, pushed: Sequence[str]) -> list[str]:
    schemas = [USER_SCHEMA]
    if user[EnterpriseUser] is not None:
        schemas.append(ENTERPRISE_SCHEMA)
    known = {s.lower() for s in schemas}
    extra = [s for s in pushed if s.lower() not in known and s.lower() in _unknown_keys(user)]
    return schemas + extra


def _unknown_keys(resource: Any) -> set[str]:
    return {key.lower() for key in resource.unknown_attributes}


def user_resource(
    identity: Identity, base_url: str, groups: Sequence[tuple[str, str]] | None = None
) -> UserResource:
    """The SCIM representation of an identity; `groups` as (group id, display name) pairs."""
    blob = identity.scim or {}
    user = (
        # a copy: patching the resource must not reach into the loaded column value
        UserResource.model_validate(copy.deepcopy(blob), scim_policy=POLICY)
        if blob
        else UserResource(user_name=identity.user_name)
    )
    was = implied(user)
    if was["user_name"] != identity.user_name:
        user.user_name = identity.user_name
    if was["external_id"] != identity.external_id:
        user.external_id = identity.external_id
    if was["display_name"] != identity.display_name:
        user.display_name = identity.display_name or None
    if (was["given_name"], was["family_name"]) != (identity.given_name, identity.family_name):
        user.name = user.name or Name()
        user.name.given_name = identity.given_name
        user.name.family_name = identity.family_name
    if was["title"] != identity.title:
        user.title = identity.title
    if (was["department"], was["manager"]) != (identity.department, identity.manager_id):
        enterprise = user[EnterpriseUser] or EnterpriseUser()
        enterprise.department = identity.department
        enterprise.manager = (
            Manager(
                value=identity.manager_id,
                ref=location(base_url, "Users", identity.manager_id),
            )
            if identity.manager_id
            else None
        )
        user[EnterpriseUser] = enterprise
    if not _same_email(was["email"], identity.email):
        _override_email(user, identity.email)
    if not blob or was["active"] != identity.active:
        user.active = identity.active
    user.id = identity.id
    user.meta = _meta("User", base_url, "Users", identity)
    if groups is not None:
        user.groups = [
            GroupMembership(
                value=group_id,
                ref=location(base_url, "Groups", group_id),
                display=display,
                type="direct",
            )
            for group_id, display in groups
        ] or None
    user.schemas = _schemas(user, blob.get("schemas") or [])
    return user


def _override_email(user: UserResource, email: str | None) -> None:
    current = primary_email(user)
    emails = list(user.emails or [])
    if email is None:
        user.emails = [e for e in emails if e is not current] or None
    elif current is not None:
        current.value = email
    else:
        user.emails = [Email(value=email, type="work", primary=True), *emails]


def group_resource(
    group: IdentityGroup, base_url: str, members: Sequence[tuple[str, str]] | None = None
) -> GroupResource:
    """The SCIM representation of a group; `members` as (identity id, display name) pairs,
    None to leave the members out (`excludedAttributes=members`)."""
    resource = GroupResource.model_validate(copy.deepcopy(group.scim or {}), scim_policy=POLICY)
    resource.display_name = group.display_name
    resource.external_id = group.external_id
    if members is None:
        resource.members = None
    else:
        pushed = {m.value: m for m in resource.members or [] if m.value}
        resource.members = [
            pushed.get(identity_id)
            or GroupMember(
                value=identity_id,
                ref=location(base_url, "Users", identity_id),
                type="User",
                display=display or None,
            )
            for identity_id, display in members
        ] or None
    resource.id = group.id
    resource.meta = _meta("Group", base_url, "Groups", group)
    resource.schemas = [GROUP_SCHEMA, *_extra_schemas(resource, group.scim or {})]
    return resource


def _extra_schemas(resource: GroupResource, blob: dict[str, Any]) -> list[str]:
    unknown = _unknown_keys(resource)
    return [s for s in blob.get("schemas") or [] if s.lower() in unknown]


def member_order(blob: dict[str, Any]) -> dict[str, int]:
    """Where each member was in the representation last pushed (members keep their order)."""
    members = blob.get("members") or []
    return {m["value"]: i for i, m in enumerate(members) if isinstance(m, dict) and "value" in m}
