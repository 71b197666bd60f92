"""The error tree. Every error carries a stable code, a failure class and a next action.

The API maps these to HTTP in one handler (`grantflow.api.errors`); the CLI prints them as one line.
"""

from __future__ import annotations

import enum
from typing import Any


class FailureClass(enum.StrEnum):
    """Why something failed, in the vocabulary shown on runs, steps and API errors."""

    VALIDATION = "validation"  # the input or definition is wrong; fix it and resubmit
    CONNECTOR = "connector"  # the target system or its connection is not usable
    PERMISSION = "permission"  # the actor or credential lacks a right
    # Grantflow is set up wrongly: a missing or wrong connection, a worker without its settings
    CONFIGURATION = "configuration"
    TRANSIENT = "transient"  # a passing fault; retrying may succeed
    PERMANENT = "permanent"  # retrying the same thing will fail the same way
    TIMEOUT = "timeout"  # a deadline passed
    SAFETY = "safety"  # a safety breaker or guard stopped it
    REJECTED = "rejected"  # a person said no (an approval rejected, a task failed the run)
    CANCELLED = "cancelled"  # an operator cancelled the run (forced: after steps had acted)
    INTERNAL = "internal"  # a bug or corrupt state inside Grantflow


class GrantflowError(Exception):
    """Root of every error Grantflow raises on purpose."""

    code = "error"
    http_status = 500
    failure_class = FailureClass.INTERNAL
    default_next_action: str | None = None

    def __init__(
        self,
        message: str,
        *,
        next_action: str | None = None,
        details: list[dict[str, Any]] | None = None,
        code: str | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.next_action = next_action or self.default_next_action
        self.details = details or []
        if code is not None:
            self.code = code
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "failure_class": str(self.failure_class),
        }
        if self.next_action:
            body["next_action"] = self.next_action
        if self.details:
            body["details"] = self.details
        body.update(self.extra)
        return body


class ConfigurationError(GrantflowError):
    code = "configuration_error"
    failure_class = FailureClass.CONFIGURATION


class ValidationError(GrantflowError):
    code = "validation_error"
    http_status = 422
    failure_class = FailureClass.VALIDATION


class BadRequest(ValidationError):
    code = "bad_request"
    http_status = 400


class PayloadTooLarge(ValidationError):
    code = "payload_too_large"
    http_status = 413


class UnsupportedMediaType(ValidationError):
    code = "unsupported_media_type"
    http_status = 415


class NotFound(GrantflowError):
    code = "not_found"
    http_status = 404
    failure_class = FailureClass.VALIDATION


class Conflict(GrantflowError):
    code = "conflict"
    http_status = 409
    failure_class = FailureClass.VALIDATION


class Unauthenticated(GrantflowError):
    code = "unauthenticated"
    http_status = 401
    failure_class = FailureClass.PERMISSION
    default_next_action = "send a valid API token as 'Authorization: Bearer <token>'"


class PermissionDenied(GrantflowError):
    code = "permission_denied"
    http_status = 403
    failure_class = FailureClass.PERMISSION


class InternalError(GrantflowError):
    code = "internal_error"
    failure_class = FailureClass.INTERNAL
    default_next_action = "report this with the request id; it is a fault in Grantflow"


class ServiceUnavailable(GrantflowError):
    code = "service_unavailable"
    http_status = 503
    failure_class = FailureClass.TRANSIENT


class ConnectorError(GrantflowError):
    """A call to an external system failed. Raised at the I/O boundary only."""

    code = "connector_error"
    http_status = 502
    failure_class = FailureClass.CONNECTOR

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
        response: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.status_code = status_code
        self.retry_after = retry_after
        self.response = response


class TransientError(ConnectorError):
    """5xx, 408, 429, network errors: retrying may succeed."""

    code = "transient_error"
    failure_class = FailureClass.TRANSIENT


class StepTimeout(TransientError):
    """The call did not answer within the step's timeout."""

    code = "step_timeout"
    failure_class = FailureClass.TIMEOUT


class PermanentError(ConnectorError):
    """4xx (but 408 and 429), bad responses: retrying would fail the same way."""

    code = "permanent_error"
    failure_class = FailureClass.PERMANENT


class Rejected(GrantflowError):
    """A person decided against going on: an approval was rejected or a task failed the run."""

    code = "rejected"
    http_status = 409
    failure_class = FailureClass.REJECTED


class SafetyStop(GrantflowError):
    """A guard refused to act (outbound address rules, breakers)."""

    code = "safety_stop"
    http_status = 409
    failure_class = FailureClass.SAFETY


class ReauthRequired(ConnectorError):
    """The connection's credential can no longer be refreshed: a person must replace it.
    Runs that need the connection wait (reason `reauth`) and resume once it is replaced."""

    code = "reauth_required"
    http_status = 409

    def __init__(self, message: str, *, connection_id: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.connection_id = connection_id
