"""Failure reasons: the class, code, message, step and next action every failed, timed-out or
cancelled run carries."""

from __future__ import annotations

from typing import Any

from grantflow.errors import ConnectorError, FailureClass, GrantflowError


def reason(
    failure_class: str,
    code: str,
    message: str,
    next_action: str,
    step_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "class": failure_class,
        "code": code,
        "message": message,
        "step_id": step_id,
        "next_action": next_action,
        **extra,
    }


def from_error(exc: BaseException, step_id: str | None, exhausted: bool) -> dict[str, Any]:
    """The failure reason for a step that raised `exc`."""
    if isinstance(exc, GrantflowError):
        extra: dict[str, Any] = {}
        if isinstance(exc, ConnectorError) and exc.status_code is not None:
            extra["status_code"] = exc.status_code
        next_action = exc.next_action or "see the step's attempts for details"
        if exhausted and exc.failure_class in (FailureClass.TRANSIENT, FailureClass.TIMEOUT):
            next_action = (
                f"{next_action}; the step used all its attempts: once the target is "
                "healthy, Retry the run (it resumes from this step)"
            )
        return reason(str(exc.failure_class), exc.code, exc.message, next_action, step_id, **extra)
    return reason(
        FailureClass.INTERNAL,
        "internal_error",
        f"unexpected {type(exc).__name__} while running the step",
        "report this fault with the run id; Retry may work if it was passing",
        step_id,
    )


def retryable(exc: BaseException) -> bool:
    return isinstance(exc, GrantflowError) and exc.failure_class in (
        FailureClass.TRANSIENT,
        FailureClass.TIMEOUT,
    )
