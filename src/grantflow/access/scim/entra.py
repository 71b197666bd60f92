"""Payload quirks of Microsoft Entra's provisioning client, normalised before validation.

The tolerances expressible as a `ScimPolicy` are set in `resources.POLICY`; pydantic's lax mode
already reads booleans sent as strings ("True"/"False"), and scim2-models reads PATCH operation
names in any case and PATCH values whose keys are attribute paths (`{"name.givenName": "Ada"}`,
`{"urn:...:enterprise:2.0:User:department": "R&D"}`). What is left is the enterprise `manager`:
Entra sends it as a bare id (`"value": "<id>"`, sometimes `[{"value": "<id>"}]`) or targets
`manager.value`, while RFC 7643 §4.3 makes `manager.$ref` required. Such a manager becomes
`{"value": id, "$ref": <its location>}`.
"""

from __future__ import annotations

from typing import Any

from grantflow.access.scim.resources import ENTERPRISE_SCHEMA, location

_ENTERPRISE = ENTERPRISE_SCHEMA.lower()
_MANAGER_PATH = f"{_ENTERPRISE}:manager"


def _key(mapping: dict[str, Any], name: str) -> str | None:
    """The key of `mapping` equal to `name` ignoring case (attribute names are case-insensitive)."""
    return next((k for k in mapping if isinstance(k, str) and k.lower() == name), None)


def manager_value(value: Any, base_url: str) -> Any:
    """A manager in any of the shapes Entra sends, as an RFC 7643 manager object."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, str):
        return {"value": value, "$ref": location(base_url, "Users", value)} if value else None
    if isinstance(value, dict):
        key = _key(value, "value")
        if key is not None and isinstance(value[key], str) and _key(value, "$ref") is None:
            return {**value, "$ref": location(base_url, "Users", value[key])}
    return value


def _normalise_enterprise(extension: Any, base_url: str) -> Any:
    if isinstance(extension, dict) and (key := _key(extension, "manager")) is not None:
        return {**extension, key: manager_value(extension[key], base_url)}
    return extension


def user_payload(payload: Any, base_url: str) -> Any:
    """A POST or PUT body of a user, its manager normalised."""
    if isinstance(payload, dict) and (key := _key(payload, _ENTERPRISE)) is not None:
        return {**payload, key: _normalise_enterprise(payload[key], base_url)}
    return payload


def _operation(operation: Any, base_url: str) -> Any:
    if not isinstance(operation, dict):
        return operation
    path_key, value_key = _key(operation, "path"), _key(operation, "value")
    path = operation.get(path_key) if path_key else None
    if isinstance(path, str):
        target = path.strip().lower()
        if target == f"{_MANAGER_PATH}.value":
            # writing manager.value alone would leave the required $ref out
            operation = {**operation, path_key: f"{ENTERPRISE_SCHEMA}:manager"}
            target = _MANAGER_PATH
        if target == _MANAGER_PATH and value_key is not None:
            return {**operation, value_key: manager_value(operation[value_key], base_url)}
        return operation
    value = operation.get(value_key) if value_key else None
    if value_key is not None and isinstance(value, dict):
        normalised = dict(value)
        for key, item in value.items():
            if not isinstance(key, str):
                continue
            if key.lower() == _MANAGER_PATH:
                normalised[key] = manager_value(item, base_url)
            elif key.lower() == _ENTERPRISE:
                normalised[key] = _normalise_enterprise(item, base_url)
        return {**operation, value_key: normalised}
    return operation


def patch_payload(payload: Any, base_url: str) -> Any:
    """A PATCH body of a user, the manager of each operation normalised."""
    if not isinstance(payload, dict) or (key := _key(payload, "operations")) is None:
        return payload
    operations = payload[key]
    if not isinstance(operations, list):
        return payload
    return {**payload, key: [_operation(op, base_url) for op in operations]}
