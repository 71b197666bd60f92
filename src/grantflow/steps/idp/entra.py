"""Microsoft Entra ID through Microsoft Graph v1.0 (connection kind `entra`, base URL
https://graph.microsoft.com): create a user, add a group member, assign a licence, disable an
account, revoke sign-in sessions.

Graph answers errors as {"error": {"code": ..., "message": ..., "details": [...]}}; the ones
recognised here: a duplicate userPrincipalName (already exists), a licence that cannot be
assigned (no seats left, usage location missing, conflicting service plans),
Request_ResourceNotFound, Authorization_RequestDenied, throttling (429, with Retry-After)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from grantflow.errors import ConnectorError, PermanentError
from grantflow.steps.execution import StepCall, StepResult
from grantflow.steps.idp import common
from grantflow.steps.idp.common import ProfileConfig, segment
from grantflow.steps.rendered import rendered_config
from grantflow.steps.transport import Answer, next_action_for

PROVIDER = "Microsoft Entra ID"
_PERMISSIONS = {
    "user": "User.ReadWrite.All",
    "group": "GroupMember.ReadWrite.All",
    "licence": "LicenseAssignment.ReadWrite.All",
    "sessions": "User.RevokeSessions.All",
}


def _error(answer: Answer) -> tuple[str, str, list[dict[str, Any]]]:
    try:
        body = answer.json()
    except ValueError:
        return "", answer.text[:300], []
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "", answer.text[:300], []
    details = [d for d in error.get("details") or [] if isinstance(d, dict)]
    return str(error.get("code") or ""), str(error.get("message") or ""), details


def _recognise(permission: str) -> common.Recognise:
    def recognise(answer: Answer, subject: str) -> ConnectorError | None:
        code, message, details = _error(answer)
        said = f"{code}: {message}" if code else message
        lowered = message.lower()
        if answer.status == 429 or code in ("TooManyRequests", "activityLimitReached"):
            return common.throttled(answer, subject, PROVIDER, said)
        if "already exist" in lowered or any(d.get("code") == "ObjectConflict" for d in details):
            return common.already_exists(answer, subject, PROVIDER, said)
        if answer.status == 404 or code == "Request_ResourceNotFound":
            return common.not_found(answer, subject, PROVIDER, said)
        if answer.status == 403 or code == "Authorization_RequestDenied":
            return common.refused(
                answer,
                subject,
                PROVIDER,
                said,
                f"grant the connection's app registration the Graph application permission "
                f"{permission} (with admin consent), test the connection, then Retry",
            )
        if answer.status == 401:
            return common.refused(answer, subject, PROVIDER, said, next_action_for(401))
        return None

    return recognise


# --- create user ------------------------------------------------------------------------------


class CreateUserConfig(ProfileConfig):
    user_principal_name: str
    display_name: str
    mail_nickname: str | None = Field(None, description="default: the UPN's local part")
    given_name: str | None = None
    surname: str | None = None
    department: str | None = None
    job_title: str | None = None
    usage_location: str | None = Field(None, description="two-letter country (for licences)")
    account_enabled: bool = True
    password: str | None = Field(None, description="default: a random one nobody sees")
    force_change_password: bool = True
    attributes: dict[str, Any] = Field(default_factory=dict, description="more user properties")


def _user_body(rendered: dict[str, Any], password: str) -> dict[str, Any]:
    config = CreateUserConfig.model_validate(rendered)
    body: dict[str, Any] = {
        "accountEnabled": config.account_enabled,
        "displayName": config.display_name,
        "mailNickname": config.mail_nickname or config.user_principal_name.split("@")[0],
        "userPrincipalName": config.user_principal_name,
        "passwordProfile": {
            "forceChangePasswordNextSignIn": config.force_change_password,
            "password": config.password or password,
        },
    }
    optional = {
        "givenName": config.given_name,
        "surname": config.surname,
        "department": config.department,
        "jobTitle": config.job_title,
        "usageLocation": config.usage_location,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    body.update(config.attributes)
    return body


def _create_user(call: StepCall) -> StepResult:
    config: CreateUserConfig = rendered_config(CreateUserConfig, call)
    password = config.password or common.temporary_password()
    answer = common.request(
        call,
        config.connection,
        "POST",
        "/v1.0/users",
        body=_user_body(call.config, password),
        subject=f"user {config.user_principal_name!r}",
        recognise=_recognise(_PERMISSIONS["user"]),
        provider=PROVIDER,
        hidden=(password,),
    )
    created = answer.json() or {}
    return StepResult(
        output={
            "id": created.get("id"),
            "user_id": created.get("id"),
            "user_principal_name": created.get("userPrincipalName"),
        },
        response=answer.record,
    )


# --- group membership -------------------------------------------------------------------------


class AddGroupMemberConfig(ProfileConfig):
    group_id: str
    user_id: str = Field(..., description="the member's object id")


def _member_path(rendered: dict[str, Any]) -> str:
    return f"/v1.0/groups/{segment(rendered['group_id'])}/members/$ref"


def _member_ref(rendered: dict[str, Any], base: str = "https://graph.microsoft.com") -> Any:
    return {"@odata.id": f"{base.rstrip('/')}/v1.0/directoryObjects/{rendered['user_id']}"}


def _already_member(answer: Answer) -> bool:
    _, message, _ = _error(answer)
    return answer.status == 400 and "added object references already exist" in message.lower()


def _add_group_member(call: StepCall) -> StepResult:
    config: AddGroupMemberConfig = rendered_config(AddGroupMemberConfig, call)
    connection = common.connection_for(call, config.connection)
    answer = common.request(
        call,
        connection,
        "POST",
        _member_path(call.config),
        body=_member_ref(call.config, connection.base_url),
        subject=f"group {config.group_id!r} (member {config.user_id!r})",
        recognise=_recognise(_PERMISSIONS["group"]),
        provider=PROVIDER,
        done=_already_member,
    )
    output = {
        "group_id": config.group_id,
        "user_id": config.user_id,
        "added": not _already_member(answer),
    }
    return StepResult(output=output, response=answer.record)


# --- licences ---------------------------------------------------------------------------------


class AssignLicenseConfig(ProfileConfig):
    user_id: str = Field(..., description="object id or userPrincipalName")
    sku_id: str = Field(..., description="the licence's skuId (a GUID)")
    disabled_plans: list[str] = Field(default_factory=list)
    remove_sku_ids: list[str] = Field(default_factory=list)


def _license_body(rendered: dict[str, Any]) -> dict[str, Any]:
    return {
        "addLicenses": [
            {"skuId": rendered["sku_id"], "disabledPlans": list(rendered.get("disabled_plans", []))}
        ],
        "removeLicenses": list(rendered.get("remove_sku_ids", [])),
    }


def _license_failure(sku: str) -> common.Recognise:
    recognise = _recognise(_PERMISSIONS["licence"])

    def license_failure(answer: Answer, subject: str) -> ConnectorError | None:
        _, message, _ = _error(answer)
        lowered = message.lower()
        if "available licenses" in lowered or "countviolation" in lowered:
            return PermanentError(
                f"No available licenses for SKU {sku}: free or buy seats, then Retry",
                code="no_licenses",
                status_code=answer.status,
                response=answer.record,
                next_action=f"free seats of SKU {sku} (remove it from leavers) or buy more "
                "in the Microsoft 365 admin center, then Retry",
            )
        if "usage location" in lowered:
            return PermanentError(
                f"the licence {sku} cannot be assigned to {subject}: no usage location",
                code="usage_location_missing",
                status_code=answer.status,
                response=answer.record,
                next_action="set the user's usageLocation (entra.create_user usage_location, "
                "or in Entra ID), then Retry",
            )
        if "mutually exclusive" in lowered or "license assignment failed" in lowered:
            return PermanentError(
                f"the licence {sku} cannot be assigned to {subject}: {message}",
                code="license_conflict",
                status_code=answer.status,
                response=answer.record,
                next_action="disable the conflicting service plans (disabled_plans) or remove "
                "the conflicting licence, then Retry",
            )
        return recognise(answer, subject)

    return license_failure


def _assign_license(call: StepCall) -> StepResult:
    config: AssignLicenseConfig = rendered_config(AssignLicenseConfig, call)
    answer = common.request(
        call,
        config.connection,
        "POST",
        f"/v1.0/users/{segment(config.user_id)}/assignLicense",
        body=_license_body(call.config),
        subject=f"user {config.user_id!r}",
        recognise=_license_failure(config.sku_id),
        provider=PROVIDER,
    )
    return StepResult(
        output={"user_id": config.user_id, "sku_id": config.sku_id, "assigned": True},
        response=answer.record,
    )


# --- disable, revoke --------------------------------------------------------------------------


class UserConfig(ProfileConfig):
    user_id: str = Field(..., description="object id or userPrincipalName")


def _disable(call: StepCall) -> StepResult:
    config: UserConfig = rendered_config(UserConfig, call)
    answer = common.request(
        call,
        config.connection,
        "PATCH",
        f"/v1.0/users/{segment(config.user_id)}",
        body={"accountEnabled": False},
        subject=f"user {config.user_id!r}",
        recognise=_recognise(_PERMISSIONS["user"]),
        provider=PROVIDER,
    )
    output = {"user_id": config.user_id, "account_enabled": False}
    return StepResult(output=output, response=answer.record)


def _revoke(call: StepCall) -> StepResult:
    config: UserConfig = rendered_config(UserConfig, call)
    answer = common.request(
        call,
        config.connection,
        "POST",
        f"/v1.0/users/{segment(config.user_id)}/revokeSignInSessions",
        subject=f"user {config.user_id!r}",
        recognise=_recognise(_PERMISSIONS["sessions"]),
        provider=PROVIDER,
    )
    return StepResult(output={"user_id": config.user_id, "revoked": True}, response=answer.record)


def _user_path(suffix: str = "") -> Any:
    return lambda r: f"/v1.0/users/{segment(r['user_id'])}{suffix}"


CREATE_USER = common.profile_step(
    "entra.create_user",
    "Create a user in Entra ID (Graph POST /v1.0/users)",
    CreateUserConfig,
    _create_user,
    common.preview("POST", lambda _r: "/v1.0/users", lambda r: _user_body(r, "<generated>")),
)
ADD_GROUP_MEMBER = common.profile_step(
    "entra.add_group_member",
    "Add a user to an Entra ID group (Graph POST /v1.0/groups/{id}/members/$ref)",
    AddGroupMemberConfig,
    _add_group_member,
    common.preview("POST", _member_path, _member_ref),
)
ASSIGN_LICENSE = common.profile_step(
    "entra.assign_license",
    "Assign a licence (Graph POST /v1.0/users/{id}/assignLicense)",
    AssignLicenseConfig,
    _assign_license,
    common.preview("POST", _user_path("/assignLicense"), _license_body),
)
DISABLE_ACCOUNT = common.profile_step(
    "entra.disable_account",
    "Disable sign-in (Graph PATCH /v1.0/users/{id} accountEnabled=false)",
    UserConfig,
    _disable,
    common.preview("PATCH", _user_path(), lambda _r: {"accountEnabled": False}),
)
REVOKE_SESSIONS = common.profile_step(
    "entra.revoke_sessions",
    "Revoke sign-in sessions (Graph POST /v1.0/users/{id}/revokeSignInSessions)",
    UserConfig,
    _revoke,
    common.preview("POST", _user_path("/revokeSignInSessions"), lambda _r: None),
)
