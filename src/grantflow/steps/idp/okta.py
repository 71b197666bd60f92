"""Okta through its management API (connection kind `okta`, base URL https://<org>.okta.com,
auth an API token as `Authorization: SSWS <token>` — auth kind api_key_header — or OAuth 2.0):
create a user, add a user to a group, deactivate a user.

Okta answers errors as {"errorCode", "errorSummary", "errorLink", "errorId", "errorCauses":
[{"errorSummary"}]}; recognised here: E0000001 with "login: An object with this field already
exists" (already exists), E0000007 (not found), E0000011 (invalid token), E0000006 (no
permission), E0000047 (rate limit)."""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from grantflow.errors import ConnectorError
from grantflow.steps.execution import StepCall, StepResult
from grantflow.steps.idp import common
from grantflow.steps.idp.common import ProfileConfig, segment
from grantflow.steps.rendered import rendered_config
from grantflow.steps.transport import Answer, next_action_for

PROVIDER = "Okta"


def _error(answer: Answer) -> tuple[str, str, list[str]]:
    try:
        body = answer.json()
    except ValueError:
        return "", answer.text[:300], []
    if not isinstance(body, dict):
        return "", answer.text[:300], []
    causes = [
        str(c.get("errorSummary"))
        for c in body.get("errorCauses") or []
        if isinstance(c, dict) and c.get("errorSummary")
    ]
    return str(body.get("errorCode") or ""), str(body.get("errorSummary") or ""), causes


def _until_reset(answer: Answer) -> float | None:
    """Okta says when its rate-limit window resets (X-Rate-Limit-Reset, epoch seconds)."""
    reset = answer.headers.get("x-rate-limit-reset", "")
    if not reset.isdigit():
        return None
    return max(0.0, int(reset) - time.time())


def _recognise(answer: Answer, subject: str) -> ConnectorError | None:
    code, summary, causes = _error(answer)
    said = "; ".join([f"{code}: {summary}" if code else summary, *causes])
    if code == "E0000001" and any("already exists" in c for c in causes):
        return common.already_exists(answer, subject, PROVIDER, said)
    if code == "E0000007" or answer.status == 404:
        return common.not_found(answer, subject, PROVIDER, said)
    if code == "E0000047" or answer.status == 429:
        return common.throttled(answer, subject, PROVIDER, said, _until_reset(answer))
    if code == "E0000006" or answer.status == 403:
        return common.refused(
            answer,
            subject,
            PROVIDER,
            said,
            "give the API token's admin (or the OAuth app) the right to manage users and "
            "groups (okta.users.manage, okta.groups.manage), test the connection, then Retry",
        )
    if code == "E0000011" or answer.status == 401:
        return common.refused(answer, subject, PROVIDER, said, next_action_for(401))
    if code == "E0000001":
        return common.refused(
            answer,
            subject,
            PROVIDER,
            said,
            "fix the profile fields Okta names (a dry-run shows the request), then Replay "
            "with latest",
        )
    return None


# --- create user ------------------------------------------------------------------------------


class CreateUserConfig(ProfileConfig):
    login: str
    email: str
    first_name: str
    last_name: str
    activate: bool = True
    group_ids: list[str] = Field(default_factory=list, description="groups to add it to")
    profile: dict[str, Any] = Field(default_factory=dict, description="more profile properties")


def _user_body(rendered: dict[str, Any]) -> dict[str, Any]:
    config = CreateUserConfig.model_validate(rendered)
    body: dict[str, Any] = {
        "profile": {
            "firstName": config.first_name,
            "lastName": config.last_name,
            "email": config.email,
            "login": config.login,
            **config.profile,
        }
    }
    if config.group_ids:
        body["groupIds"] = list(config.group_ids)
    return body


def _activate(rendered: dict[str, Any]) -> str:
    return "true" if rendered.get("activate", True) not in (False, "false") else "false"


def _create_user(call: StepCall) -> StepResult:
    config: CreateUserConfig = rendered_config(CreateUserConfig, call)
    answer = common.request(
        call,
        config.connection,
        "POST",
        "/api/v1/users",
        params={"activate": _activate(call.config)},
        body=_user_body(call.config),
        subject=f"user {config.login!r}",
        recognise=_recognise,
        provider=PROVIDER,
    )
    created = answer.json() or {}
    return StepResult(
        output={
            "id": created.get("id"),
            "user_id": created.get("id"),
            "login": (created.get("profile") or {}).get("login"),
            "status": created.get("status"),
        },
        response=answer.record,
    )


# --- groups -----------------------------------------------------------------------------------


class AddToGroupConfig(ProfileConfig):
    group_id: str
    user_id: str


def _member_path(rendered: dict[str, Any]) -> str:
    return f"/api/v1/groups/{segment(rendered['group_id'])}/users/{segment(rendered['user_id'])}"


def _add_to_group(call: StepCall) -> StepResult:
    config: AddToGroupConfig = rendered_config(AddToGroupConfig, call)
    answer = common.request(
        call,
        config.connection,
        "PUT",
        _member_path(call.config),
        subject=f"group {config.group_id!r} or user {config.user_id!r}",
        recognise=_recognise,
        provider=PROVIDER,
    )
    output = {"group_id": config.group_id, "user_id": config.user_id, "added": True}
    return StepResult(output=output, response=answer.record)


# --- deactivate -------------------------------------------------------------------------------


class DeactivateUserConfig(ProfileConfig):
    user_id: str = Field(..., description="the user's id or login")
    send_email: bool = False


def _deactivate_path(rendered: dict[str, Any]) -> str:
    return f"/api/v1/users/{segment(rendered['user_id'])}/lifecycle/deactivate"


def _deactivate(call: StepCall) -> StepResult:
    config: DeactivateUserConfig = rendered_config(DeactivateUserConfig, call)
    answer = common.request(
        call,
        config.connection,
        "POST",
        _deactivate_path(call.config),
        params={"sendEmail": "true" if config.send_email else "false"},
        subject=f"user {config.user_id!r}",
        recognise=_recognise,
        provider=PROVIDER,
    )
    return StepResult(
        output={"user_id": config.user_id, "status": "DEPROVISIONED"}, response=answer.record
    )


CREATE_USER = common.profile_step(
    "okta.create_user",
    "Create a user in Okta (POST /api/v1/users?activate=true)",
    CreateUserConfig,
    _create_user,
    common.preview("POST", lambda r: f"/api/v1/users?activate={_activate(r)}", _user_body),
)
ADD_TO_GROUP = common.profile_step(
    "okta.add_to_group",
    "Add a user to an Okta group (PUT /api/v1/groups/{gid}/users/{uid})",
    AddToGroupConfig,
    _add_to_group,
    common.preview("PUT", _member_path, lambda _r: None),
)
DEACTIVATE_USER = common.profile_step(
    "okta.deactivate_user",
    "Deactivate an Okta user (POST /api/v1/users/{id}/lifecycle/deactivate)",
    DeactivateUserConfig,
    _deactivate,
    common.preview("POST", _deactivate_path, lambda _r: None),
)
