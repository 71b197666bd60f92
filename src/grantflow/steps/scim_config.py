"""What the `scim.*` steps are configured with, the SCIM payloads built from it, and the dry-run
previews of the SCIM operations (method, endpoint, payload; nothing secret)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from grantflow.definitions.expressions import is_template
from grantflow.redaction import redact_keys
from grantflow.steps.registry import Reference
from grantflow.steps.scim_session import quoted

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


class _Strict(BaseModel):
    # (a template that renders an id as a number still names the same resource)
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class EmailEntry(_Strict):
    value: str
    type: str | None = "work"
    primary: bool | None = None


class NameParts(_Strict):
    given_name: str | None = None
    family_name: str | None = None
    formatted: str | None = None


class ScimStepConfig(_Strict):
    connection: str = Field(..., description="a `scim` connection of the workflow's application")


class UserFields(_Strict):
    """Attributes of a user; each templated. A string standing for a bool or a list must be a
    template (`{{ identity.active }}`)."""

    display_name: str | None = None
    name: NameParts | None = None
    emails: list[str | EmailEntry] | str | None = Field(
        None, description="addresses (the first is primary), or a template giving them"
    )
    active: bool | str | None = None
    external_id: str | None = Field(None, description="the identity's id on our side")
    attributes: dict[str, Any] = Field(
        default_factory=dict,
        description="more SCIM attributes as sent (e.g. title, or the enterprise extension "
        "'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User')",
    )


class UserRef(ScimStepConfig):
    user_id: str | None = Field(None, description="the target's id of the user")
    user_name: str | None = Field(None, description="or the userName to look the user up by")

    @model_validator(mode="after")
    def _one_user(self) -> UserRef:
        if (self.user_id is None) == (self.user_name is None):
            raise ValueError("give exactly one of user_id or user_name")
        return self


class CreateUserConfig(ScimStepConfig, UserFields):
    user_name: str
    active: bool | str | None = True
    if_exists: Literal["fail", "adopt"] = Field(
        "fail", description="an account with this userName or email: fail, or use it"
    )


class UpdateUserConfig(UserRef, UserFields):
    method: Literal["auto", "patch", "put"] = "auto"

    @model_validator(mode="after")
    def _something(self) -> UpdateUserConfig:
        if not user_attributes(self):
            raise ValueError("give at least one attribute to change")
        return self


class MembershipConfig(UserRef):
    group: str | None = Field(None, description="the group's displayName")
    group_id: str | None = Field(None, description="or the target's id of the group")

    @model_validator(mode="after")
    def _one_group(self) -> MembershipConfig:
        if (self.group is None) == (self.group_id is None):
            raise ValueError("give exactly one of group or group_id")
        return self


class DeactivateUserConfig(UserRef):
    method: Literal["auto", "patch", "put"] = Field(
        "auto",
        description="PATCH active=false, or PUT the whole user; auto: PATCH when the "
        "server supports it",
    )


class DeleteUserConfig(UserRef):
    if_missing: Literal["fail", "succeed"] = "fail"


class FindUserConfig(ScimStepConfig):
    user_name: str | None = None
    email: str | None = None
    if_missing: Literal["fail", "succeed"] = Field(
        "fail", description="no such user: fail, or succeed with found=false"
    )

    @model_validator(mode="after")
    def _key(self) -> FindUserConfig:
        if self.user_name is None and self.email is None:
            raise ValueError("give user_name, email or both")
        return self


# --- payloads ---------------------------------------------------------------------------------


def flag(value: bool | str | None) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0"):
        return False
    raise ValueError(f"{value!r} is not true or false")


def email_entries(emails: list[str | EmailEntry] | str | None) -> list[dict[str, Any]]:
    items: list[Any] = [emails] if isinstance(emails, str) else list(emails or [])
    entries = []
    for index, item in enumerate(items):
        entry = item if isinstance(item, EmailEntry) else EmailEntry(value=str(item))
        if not entry.value:
            continue
        data = entry.model_dump(exclude_none=True)
        if entry.primary is None and index == 0:
            data["primary"] = True
        entries.append(data)
    return entries


def user_attributes(config: UserFields) -> dict[str, Any]:
    """The SCIM attributes the config sets (JSON names), not userName."""
    payload: dict[str, Any] = {}
    if config.display_name is not None:
        payload["displayName"] = config.display_name
    if config.name is not None:
        parts = {
            "givenName": config.name.given_name,
            "familyName": config.name.family_name,
            "formatted": config.name.formatted,
        }
        payload["name"] = {k: v for k, v in parts.items() if v}
    emails = email_entries(config.emails)
    if emails:
        payload["emails"] = emails
    if config.active is not None:
        try:
            payload["active"] = flag(config.active)
        except ValueError:
            payload["active"] = config.active  # a template, or a value the step refuses
    if config.external_id is not None:
        payload["externalId"] = config.external_id
    payload.update(config.attributes)
    return payload


def user_payload(config: CreateUserConfig) -> dict[str, Any]:
    return {"userName": config.user_name, **user_attributes(config)}


def primary_email(config: CreateUserConfig) -> str | None:
    emails = email_entries(config.emails)
    return str(emails[0]["value"]) if emails else None


def patch_op(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


def member_add(user_id: str) -> dict[str, Any]:
    return patch_op({"op": "add", "path": "members", "value": [{"value": user_id}]})


def member_remove(user_id: str) -> dict[str, Any]:
    return patch_op({"op": "remove", "path": f"members[value eq {quoted(user_id)}]"})


# --- publish-gate rules -----------------------------------------------------------------------


def references(config: ScimStepConfig) -> list[Reference]:
    if is_template(config.connection):
        return []
    return [Reference("connection", config.connection, "connection")]


def checks(config: ScimStepConfig) -> list[tuple[str, str]]:
    """Strings standing for a bool or a list must be templates."""
    problems = []
    active = getattr(config, "active", None)
    if isinstance(active, str) and not is_template(active):
        try:
            flag(active)
        except ValueError as exc:
            problems.append(("active", str(exc)))
    emails = getattr(config, "emails", None)
    if isinstance(emails, str) and not is_template(emails) and "@" not in emails:
        problems.append(("emails", f"{emails!r} is neither an address nor a template"))
    return problems


# --- dry-run previews -------------------------------------------------------------------------


def _lookup(endpoint: str, expression: str) -> dict[str, Any]:
    return {"method": "GET", "endpoint": endpoint, "filter": expression}


def _user_lookups(rendered: dict[str, Any]) -> list[dict[str, Any]]:
    if rendered.get("user_name") is not None and rendered.get("user_id") is None:
        return [_lookup("/Users", f"userName eq {quoted(str(rendered['user_name']))}")]
    return []


def _user_endpoint(rendered: dict[str, Any]) -> str:
    if rendered.get("user_id") is not None:
        return f"/Users/{rendered['user_id']}"
    return f"/Users/<id of user {rendered.get('user_name')!r}>"


def _shown(operation: str, rendered: dict[str, Any], **request: Any) -> dict[str, Any]:
    lookups = request.pop("lookups", [])
    if "payload" in request:
        request["payload"] = redact_keys(request["payload"])
    return {
        "operation": operation,
        "connection": rendered.get("connection"),
        "lookups": lookups,
        "request": request,
    }


def _safely(model: type[_Strict], rendered: dict[str, Any]) -> Any:
    try:
        return model.model_validate(rendered)
    except ValueError:
        return None


def preview_create_user(rendered: dict[str, Any]) -> dict[str, Any]:
    config = _safely(CreateUserConfig, rendered)
    if config is None:
        return {"operation": "scim.create_user", "config": redact_keys(rendered)}
    lookups = [_lookup("/Users", f"userName eq {quoted(config.user_name)}")]
    lookups += [
        _lookup("/Users", f"emails.value eq {quoted(e['value'])}")
        for e in email_entries(config.emails)
    ]
    return _shown(
        "scim.create_user",
        rendered,
        lookups=lookups,
        method="POST",
        endpoint="/Users",
        payload=user_payload(config),
        if_exists=config.if_exists,
    )


def preview_update_user(rendered: dict[str, Any]) -> dict[str, Any]:
    config = _safely(UpdateUserConfig, rendered)
    if config is None:
        return {"operation": "scim.update_user", "config": redact_keys(rendered)}
    changes = user_attributes(config)
    if config.method == "put":
        return _shown(
            "scim.update_user",
            rendered,
            lookups=_user_lookups(rendered),
            method="PUT",
            endpoint=_user_endpoint(rendered),
            payload={"<the current user, with>": changes},
        )
    return _shown(
        "scim.update_user",
        rendered,
        lookups=_user_lookups(rendered),
        method="PATCH",
        endpoint=_user_endpoint(rendered),
        payload=patch_op({"op": "replace", "value": changes}),
    )


def _group_endpoint(rendered: dict[str, Any]) -> str:
    if rendered.get("group_id") is not None:
        return f"/Groups/{rendered['group_id']}"
    return f"/Groups/<id of group {rendered.get('group')!r}>"


def _membership(operation: str, rendered: dict[str, Any], add: bool) -> dict[str, Any]:
    lookups = _user_lookups(rendered)
    if rendered.get("group") is not None and rendered.get("group_id") is None:
        lookups.append(_lookup("/Groups", f"displayName eq {quoted(str(rendered['group']))}"))
    user = rendered.get("user_id") or f"<id of user {rendered.get('user_name')!r}>"
    return _shown(
        operation,
        rendered,
        lookups=lookups,
        method="PATCH",
        endpoint=_group_endpoint(rendered),
        payload=member_add(str(user)) if add else member_remove(str(user)),
    )


def preview_add_to_group(rendered: dict[str, Any]) -> dict[str, Any]:
    return _membership("scim.add_to_group", rendered, add=True)


def preview_remove_from_group(rendered: dict[str, Any]) -> dict[str, Any]:
    return _membership("scim.remove_from_group", rendered, add=False)


def preview_deactivate_user(rendered: dict[str, Any]) -> dict[str, Any]:
    if rendered.get("method") == "put":
        return _shown(
            "scim.deactivate_user",
            rendered,
            lookups=[*_user_lookups(rendered), {"method": "GET", "endpoint": "/Users/<id>"}],
            method="PUT",
            endpoint=_user_endpoint(rendered),
            payload={"<the current user, with>": {"active": False}},
        )
    return _shown(
        "scim.deactivate_user",
        rendered,
        lookups=_user_lookups(rendered),
        method="PATCH",
        endpoint=_user_endpoint(rendered),
        payload=patch_op({"op": "replace", "path": "active", "value": False}),
    )


def preview_delete_user(rendered: dict[str, Any]) -> dict[str, Any]:
    return _shown(
        "scim.delete_user",
        rendered,
        lookups=_user_lookups(rendered),
        method="DELETE",
        endpoint=_user_endpoint(rendered),
    )


def preview_find_user(rendered: dict[str, Any]) -> dict[str, Any]:
    lookups = []
    if rendered.get("user_name") is not None:
        lookups.append(_lookup("/Users", f"userName eq {quoted(str(rendered['user_name']))}"))
    if rendered.get("email") is not None:
        lookups.append(_lookup("/Users", f"emails.value eq {quoted(str(rendered['email']))}"))
    return {
        "operation": "scim.find_user",
        "connection": rendered.get("connection"),
        "lookups": lookups,
    }
