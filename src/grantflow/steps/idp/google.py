"""Google Workspace through the Admin SDK Directory API (connection kind `google`, base URL
https://admin.googleapis.com, auth OAuth 2.0 for a service account with domain-wide
delegation): insert a user, add a group member, suspend a user.

Google answers errors as {"error": {"code", "message", "errors": [{"message", "domain",
"reason"}]}}; recognised here: 409 "Entity already exists." (already exists; "Member already
exists." means the work is done), 404 (not found), 403 with a rate-limit reason (throttled,
Google's way), 403 otherwise (no permission), 401 (credential)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from grantflow.errors import ConnectorError
from grantflow.steps.execution import StepCall, StepResult
from grantflow.steps.idp import common
from grantflow.steps.idp.common import ProfileConfig, segment
from grantflow.steps.rendered import rendered_config
from grantflow.steps.transport import Answer, next_action_for

PROVIDER = "Google Workspace"
BASE = "/admin/directory/v1"
_RATE_REASONS = {"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"}


def _error(answer: Answer) -> tuple[str, set[str]]:
    try:
        body = answer.json()
    except ValueError:
        return answer.text[:300], set()
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return answer.text[:300], set()
    reasons = {str(e.get("reason")) for e in error.get("errors") or [] if isinstance(e, dict)}
    return str(error.get("message") or ""), reasons


def _recognise(answer: Answer, subject: str) -> ConnectorError | None:
    message, reasons = _error(answer)
    if answer.status == 409 or "duplicate" in reasons:
        return common.already_exists(answer, subject, PROVIDER, message)
    if answer.status == 404 or "notFound" in reasons:
        return common.not_found(answer, subject, PROVIDER, message)
    if answer.status == 429 or reasons & _RATE_REASONS:
        return common.throttled(answer, subject, PROVIDER, message)
    if answer.status == 403:
        return common.refused(
            answer,
            subject,
            PROVIDER,
            message,
            "give the service account domain-wide delegation with the scopes "
            "admin.directory.user and admin.directory.group, impersonating an admin; test the "
            "connection, then Retry",
        )
    if answer.status == 401:
        return common.refused(answer, subject, PROVIDER, message, next_action_for(401))
    return None


# --- insert user ------------------------------------------------------------------------------


class InsertUserConfig(ProfileConfig):
    primary_email: str
    given_name: str
    family_name: str
    password: str | None = Field(None, description="default: a random one nobody sees")
    change_password_at_next_login: bool = True
    org_unit_path: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict, description="more user fields")


def _user_body(rendered: dict[str, Any], password: str) -> dict[str, Any]:
    config = InsertUserConfig.model_validate(rendered)
    body: dict[str, Any] = {
        "primaryEmail": config.primary_email,
        "name": {"givenName": config.given_name, "familyName": config.family_name},
        "password": config.password or password,
        "changePasswordAtNextLogin": config.change_password_at_next_login,
    }
    if config.org_unit_path:
        body["orgUnitPath"] = config.org_unit_path
    body.update(config.attributes)
    return body


def _insert_user(call: StepCall) -> StepResult:
    config: InsertUserConfig = rendered_config(InsertUserConfig, call)
    password = config.password or common.temporary_password()
    answer = common.request(
        call,
        config.connection,
        "POST",
        f"{BASE}/users",
        body=_user_body(call.config, password),
        subject=f"user {config.primary_email!r}",
        recognise=_recognise,
        provider=PROVIDER,
        hidden=(password,),
    )
    created = answer.json() or {}
    return StepResult(
        output={
            "id": created.get("id"),
            "user_id": created.get("id"),
            "primary_email": created.get("primaryEmail"),
        },
        response=answer.record,
    )


# --- groups -----------------------------------------------------------------------------------


class AddGroupMemberConfig(ProfileConfig):
    group_key: str = Field(..., description="the group's email address or id")
    email: str = Field(..., description="the member's email address")
    role: Literal["MEMBER", "MANAGER", "OWNER"] = "MEMBER"


def _members_path(rendered: dict[str, Any]) -> str:
    return f"{BASE}/groups/{segment(rendered['group_key'])}/members"


def _member_exists(answer: Answer) -> bool:
    message, _ = _error(answer)
    return answer.status == 409 and "member already exists" in message.lower()


def _add_group_member(call: StepCall) -> StepResult:
    config: AddGroupMemberConfig = rendered_config(AddGroupMemberConfig, call)
    answer = common.request(
        call,
        config.connection,
        "POST",
        _members_path(call.config),
        body={"email": config.email, "role": config.role},
        subject=f"group {config.group_key!r} (member {config.email!r})",
        recognise=_recognise,
        provider=PROVIDER,
        done=_member_exists,
    )
    output = {"group_key": config.group_key, "email": config.email}
    return StepResult(
        output={**output, "added": not _member_exists(answer)}, response=answer.record
    )


# --- suspend ----------------------------------------------------------------------------------


class SuspendUserConfig(ProfileConfig):
    user_key: str = Field(..., description="the user's primary email, alias or id")
    method: Literal["PUT", "PATCH"] = "PUT"


def _user_path(rendered: dict[str, Any]) -> str:
    return f"{BASE}/users/{segment(rendered['user_key'])}"


def _suspend(call: StepCall) -> StepResult:
    config: SuspendUserConfig = rendered_config(SuspendUserConfig, call)
    answer = common.request(
        call,
        config.connection,
        config.method,
        _user_path(call.config),
        body={"suspended": True},
        subject=f"user {config.user_key!r}",
        recognise=_recognise,
        provider=PROVIDER,
    )
    return StepResult(
        output={"user_key": config.user_key, "suspended": True}, response=answer.record
    )


INSERT_USER = common.profile_step(
    "google.insert_user",
    "Create a Google Workspace user (POST /admin/directory/v1/users)",
    InsertUserConfig,
    _insert_user,
    common.preview("POST", lambda _r: f"{BASE}/users", lambda r: _user_body(r, "<generated>")),
)
ADD_GROUP_MEMBER = common.profile_step(
    "google.add_group_member",
    "Add a member to a Google group (POST /admin/directory/v1/groups/{groupKey}/members)",
    AddGroupMemberConfig,
    _add_group_member,
    common.preview(
        "POST", _members_path, lambda r: {"email": r["email"], "role": r.get("role", "MEMBER")}
    ),
)
SUSPEND_USER = common.profile_step(
    "google.suspend_user",
    "Suspend a Google Workspace user (PUT or PATCH /admin/directory/v1/users/{userKey})",
    SuspendUserConfig,
    _suspend,
    common.preview(
        lambda r: str(r.get("method", "PUT")), _user_path, lambda _r: {"suspended": True}
    ),
)
