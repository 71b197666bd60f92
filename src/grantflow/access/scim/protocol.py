"""The protocol around the resources: request bodies, ETags and SCIM error documents."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import ValidationError as PydanticValidationError
from scim2_models import (
    BaseModel,
    Context,
    Error,
    InvalidSyntaxException,
    PreconditionFailedException,
    SCIMException,
)

from grantflow.access.scim.resources import POLICY
from grantflow.errors import Conflict, GrantflowError, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"


def error_document(status: int, detail: str, scim_type: str | None = None) -> dict[str, Any]:
    """An RFC 7644 §3.12 error: the status is a string, scimType only when one applies."""
    body: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "status": str(status)}
    if scim_type:
        body["scimType"] = scim_type
    body["detail"] = detail
    return body


def error_of(exc: Exception) -> tuple[int, dict[str, Any]]:
    """The status and SCIM error document for an exception raised while serving /scim/v2."""
    if isinstance(exc, SCIMException):
        error = exc.to_error()
        status = error.status or 400
        return status, error_document(status, error.detail or "", error.scim_type)
    if isinstance(exc, GrantflowError):
        status = exc.http_status
        scim_type = None
        if isinstance(exc, Conflict) and exc.code == "identity_exists":
            scim_type = "uniqueness"
        elif isinstance(exc, ValidationError) and status in (400, 422):
            # SCIM has no 422: a value that does not fit is a 400 invalidValue
            status, scim_type = 400, "invalidValue"
        detail = exc.message
        if exc.next_action:
            detail = f"{detail} (next: {exc.next_action})"
        return status, error_document(status, detail, scim_type)
    return 500, error_document(500, "an unexpected error occurred")


def scim_exception(exc: PydanticValidationError) -> SCIMException:
    """The SCIM exception a failed validation stands for (the first error names the field)."""
    return SCIMException.from_error(Error.from_validation_errors(exc)[0])


def decode_json(body: bytes) -> Any:
    if not body.strip():
        raise InvalidSyntaxException(detail="the request has no body; send a SCIM JSON document")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidSyntaxException(detail=f"the request body is not valid JSON: {exc}") from None


def read(model: type[ModelT], payload: Any, context: Context) -> ModelT:
    """Validate a payload in the context of its operation, under Grantflow's policy."""
    if not isinstance(payload, dict):
        raise InvalidSyntaxException(detail="the request body must be a JSON object")
    try:
        return model.model_validate(payload, scim_ctx=context, scim_policy=POLICY)
    except PydanticValidationError as exc:
        raise scim_exception(exc) from None


def _tags(header: str) -> set[str]:
    """The entity tags of an If-Match / If-None-Match header, compared weakly (RFC 9110 §8.8.3)."""
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def check_if_match(header: str | None, current: str) -> None:
    """RFC 7644 §3.14: a write with If-Match fails with 412 unless the version still matches."""
    if header is None:
        return
    tags = _tags(header)
    if "*" not in tags and current.removeprefix("W/") not in tags:
        raise PreconditionFailedException(
            detail=f"the resource changed: its version is {current}, not {header.strip()}"
        )


def not_modified(header: str | None, current: str) -> bool:
    """GET with If-None-Match naming the current version answers 304."""
    if header is None:
        return False
    tags = _tags(header)
    return "*" in tags or current.removeprefix("W/") in tags
