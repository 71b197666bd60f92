"""The `scim.*` steps: provision users and group memberships in a SCIM 2.0 service provider
through a `scim` connection. Lookups change nothing; the rest do. Each step's output carries
the target's ids (`steps.<id>.output.user_id`, `.group_id`) for later steps.

A step that created (or deleted) something and is attempted again — the worker died before its
outcome was recorded — recognises its own earlier work: a re-created user whose `externalId` is
the configured `external_id`, a user already gone on a repeated delete.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from grantflow.errors import PermanentError
from grantflow.steps import scim_config as cfg
from grantflow.steps.execution import StepCall, StepResult
from grantflow.steps.registry import StepType
from grantflow.steps.rendered import rendered_config
from grantflow.steps.scim_session import ScimSession, quoted, run


def _checked(payload: dict[str, Any]) -> dict[str, Any]:
    if isinstance(payload.get("active"), str):
        raise PermanentError(
            f"active: {payload['active']!r} is not true or false",
            code="step_config_invalid",
            next_action="map `active` to a boolean, then Replay with latest",
        )
    return payload


def _user_output(user: Any, **flags: bool) -> dict[str, Any]:
    return {
        "id": user.id,
        "user_id": user.id,
        "user_name": user.user_name,
        "active": user.active,
        **flags,
    }


def _find_user(s: ScimSession, user_name: str) -> Any:
    found = s.search("User", f"userName eq {quoted(user_name)}", f"user {user_name!r}")
    return found[0] if found else None


def _find_by_email(s: ScimSession, email: str) -> Any:
    try:
        found = s.search("User", f"emails.value eq {quoted(email)}", f"user {email!r}")
    except PermanentError as exc:
        if exc.status_code == 400:  # the server cannot filter on emails: userName must do
            return None
        raise
    return found[0] if found else None


def _user_id(s: ScimSession, config: cfg.UserRef) -> str:
    if config.user_id is not None:
        return config.user_id
    assert config.user_name is not None
    user = _find_user(s, config.user_name)
    if user is None:
        raise PermanentError(
            f"user {config.user_name!r} does not exist in {s.label}",
            code="not_found",
            response=s.record,
            next_action="check the user name (a dry-run shows it) or create the user, then Retry",
        )
    return str(user.id)


def _group_id(s: ScimSession, config: cfg.MembershipConfig) -> tuple[str, str]:
    if config.group_id is not None:
        return config.group_id, f"group {config.group_id!r}"
    assert config.group is not None
    subject = f"group {config.group!r}"
    found = s.search("Group", f"displayName eq {quoted(config.group)}", subject)
    if not found:
        raise PermanentError(
            f"{subject} does not exist in {s.label}",
            code="group_missing",
            response=s.record,
            next_action=f"create {subject} in the target, or fix the group name in the step "
            "(a dry-run shows it), then Retry",
        )
    return str(found[0].id), subject


# --- the operations ---------------------------------------------------------------------------


def _create_user(call: StepCall) -> StepResult:
    config: cfg.CreateUserConfig = rendered_config(cfg.CreateUserConfig, call)
    payload = _checked(cfg.user_payload(config))
    email = cfg.primary_email(config)
    emails = [str(e["value"]) for e in cfg.email_entries(config.emails)]

    def operation(s: ScimSession) -> StepResult:
        existing = _find_user(s, config.user_name)
        for address in emails:
            existing = existing or _find_by_email(s, address)
        if existing is not None:
            ours = (
                call.attempt > 1
                and config.external_id is not None
                and existing.external_id == config.external_id
            )
            if config.if_exists == "adopt" or ours:
                output = _user_output(existing, created=ours, adopted=not ours)
                return StepResult(output=output, response=s.record)
            raise PermanentError(
                f"an account for {email or config.user_name!r} already exists in {s.label} "
                f"(userName {existing.user_name!r}, id {existing.id})",
                code="already_exists",
                response=s.record,
                next_action="remove or rename the existing account in the target, or set "
                "`if_exists: adopt` on the step to use it; then Retry",
            )
        with s.translating(f"the account for {email or config.user_name!r}"):
            created = s.scim.create(s.model("User"), payload)
        return StepResult(
            output=_user_output(created, created=True, adopted=False), response=s.record
        )

    return run(call, config.connection, operation)


def _update_user(call: StepCall) -> StepResult:
    config: cfg.UpdateUserConfig = rendered_config(cfg.UpdateUserConfig, call)
    changes = _checked(cfg.user_attributes(config))

    def operation(s: ScimSession) -> StepResult:
        user_id = _user_id(s, config)
        subject = f"user {config.user_name or user_id!r}"
        model = s.model("User")
        with s.translating(subject):
            if config.method == "patch" or (config.method == "auto" and s.patch_supported):
                s.scim.modify(model, user_id, cfg.patch_op({"op": "replace", "value": changes}))
            else:
                current = s.get(model, user_id)
                merged = _merge(current.model_dump(mode="json", by_alias=True), changes)
                s.scim.replace(model, merged)
        output = {"user_id": user_id, "updated": sorted(changes)}
        return StepResult(output=output, response=s.record)

    return run(call, config.connection, operation)


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = {k: v for k, v in base.items() if v is not None}
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _membership(add: bool) -> Callable[[StepCall], StepResult]:
    def execute(call: StepCall) -> StepResult:
        config: cfg.MembershipConfig = rendered_config(cfg.MembershipConfig, call)

        def operation(s: ScimSession) -> StepResult:
            group_id, subject = _group_id(s, config)
            user_id = _user_id(s, config)
            model = s.model("Group")
            with s.translating(subject):
                if s.patch_supported:
                    change = cfg.member_add(user_id) if add else cfg.member_remove(user_id)
                    try:
                        s.scim.modify(model, group_id, change)
                    except Exception as exc:
                        if add or getattr(exc, "scim_type", None) != "noTarget":
                            raise  # (removing a non-member is done already)
                else:
                    _replace_members(s, model, group_id, user_id, add)
            output = {"group_id": group_id, "user_id": user_id, "member": add}
            return StepResult(output=output, response=s.record)

        return run(call, config.connection, operation)

    return execute


def _replace_members(s: ScimSession, model: Any, group_id: str, user_id: str, add: bool) -> None:
    group = s.get(model, group_id)
    data = group.model_dump(mode="json", by_alias=True, exclude_none=True)
    members = [m for m in data.get("members") or [] if m.get("value") != user_id]
    if add:
        members.append({"value": user_id})
    data["members"] = members
    s.scim.replace(model, data)


def _deactivate_user(call: StepCall) -> StepResult:
    config: cfg.DeactivateUserConfig = rendered_config(cfg.DeactivateUserConfig, call)

    def operation(s: ScimSession) -> StepResult:
        user_id = _user_id(s, config)
        model = s.model("User")
        with s.translating(f"user {config.user_name or user_id!r}"):
            if config.method == "patch" or (config.method == "auto" and s.patch_supported):
                change = cfg.patch_op({"op": "replace", "path": "active", "value": False})
                s.scim.modify(model, user_id, change)
            else:
                current = s.get(model, user_id)
                data = current.model_dump(mode="json", by_alias=True, exclude_none=True)
                s.scim.replace(model, {**data, "active": False})
        return StepResult(output={"user_id": user_id, "active": False}, response=s.record)

    return run(call, config.connection, operation)


def _delete_user(call: StepCall) -> StepResult:
    config: cfg.DeleteUserConfig = rendered_config(cfg.DeleteUserConfig, call)

    def operation(s: ScimSession) -> StepResult:
        if config.user_id is None and config.if_missing == "succeed":
            assert config.user_name is not None
            if _find_user(s, config.user_name) is None:
                output = {"user_id": None, "deleted": False}
                return StepResult(output=output, response=s.record)
        user_id = _user_id(s, config)
        try:
            with s.translating(f"user {config.user_name or user_id!r}"):
                s.scim.delete(s.model("User"), user_id)
        except PermanentError as exc:
            gone = exc.code == "not_found" and (config.if_missing == "succeed" or call.attempt > 1)
            if not gone:
                raise
            return StepResult(output={"user_id": user_id, "deleted": False}, response=s.record)
        return StepResult(output={"user_id": user_id, "deleted": True}, response=s.record)

    return run(call, config.connection, operation)


def _find(call: StepCall) -> StepResult:
    config: cfg.FindUserConfig = rendered_config(cfg.FindUserConfig, call)

    def operation(s: ScimSession) -> StepResult:
        user = _find_user(s, config.user_name) if config.user_name is not None else None
        if user is None and config.email is not None:
            user = _find_by_email(s, config.email)
        if user is None:
            wanted = config.user_name or config.email
            if config.if_missing == "fail":
                raise PermanentError(
                    f"user {wanted!r} does not exist in {s.label}",
                    code="not_found",
                    response=s.record,
                    next_action="check the user name (a dry-run shows it), then Retry",
                )
            return StepResult(output={"found": False, "user_id": None}, response=s.record)
        return StepResult(output={"found": True, **_user_output(user)}, response=s.record)

    return run(call, config.connection, operation)


def _lookup(_config: Any) -> bool:
    return False


def _step(
    name: str,
    summary: str,
    model: type[cfg.ScimStepConfig],
    execute: Callable[[StepCall], StepResult],
    preview: Callable[[dict[str, Any]], dict[str, Any]],
    **options: Any,
) -> StepType:
    return StepType(
        name=name,
        summary=summary,
        config_model=model,
        references=cfg.references,
        checks=cfg.checks,
        preview=preview,
        execute=execute,
        **options,
    )


CREATE_USER = _step(
    "scim.create_user",
    "Create a user (looked up by userName and email first; `if_exists: adopt` uses it)",
    cfg.CreateUserConfig,
    _create_user,
    cfg.preview_create_user,
)
UPDATE_USER = _step(
    "scim.update_user",
    "Change a user's attributes",
    cfg.UpdateUserConfig,
    _update_user,
    cfg.preview_update_user,
)
ADD_TO_GROUP = _step(
    "scim.add_to_group",
    "Add a user to a group",
    cfg.MembershipConfig,
    _membership(add=True),
    cfg.preview_add_to_group,
)
REMOVE_FROM_GROUP = _step(
    "scim.remove_from_group",
    "Remove a user from a group",
    cfg.MembershipConfig,
    _membership(add=False),
    cfg.preview_remove_from_group,
)
DEACTIVATE_USER = _step(
    "scim.deactivate_user",
    "Set a user's active to false (PATCH, or PUT)",
    cfg.DeactivateUserConfig,
    _deactivate_user,
    cfg.preview_deactivate_user,
)
DELETE_USER = _step(
    "scim.delete_user",
    "Delete a user",
    cfg.DeleteUserConfig,
    _delete_user,
    cfg.preview_delete_user,
)
FIND_USER = _step(
    "scim.find_user",
    "Look a user up by userName or email (changes nothing)",
    cfg.FindUserConfig,
    _find,
    cfg.preview_find_user,
    side_effects=_lookup,
)
