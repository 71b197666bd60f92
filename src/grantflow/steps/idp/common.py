"""What the identity-provider profiles share: calling the provider through its connection
(guard, auth, limits, idempotency key and 401 refresh come from `steps.transport.send`), the
failures every provider has (already exists, not found, throttled), and dry-run previews.

Each provider module recognises its documented error bodies and raises one of these; whatever
it does not recognise falls back to `transport.raise_for_status` (5xx, 408, 429 transient;
other 4xx permanent)."""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable
from typing import Any, NoReturn
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from grantflow.connections.access import ResolvedConnection
from grantflow.definitions.expressions import is_template
from grantflow.errors import ConnectorError, PermanentError, TransientError
from grantflow.redaction import redact_keys
from grantflow.steps.execution import StepCall, StepResult, connections_of
from grantflow.steps.registry import Reference, StepType
from grantflow.steps.transport import Answer, raise_for_status, retry_after_seconds, send

# A provider's reading of a failed answer: a recognised failure, or None to fall back.
Recognise = Callable[[Answer, str], ConnectorError | None]


class ProfileConfig(BaseModel):
    # (a template that renders an id as a number still names the same resource)
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    connection: str = Field(..., description="the provider's connection (kind entra/okta/google)")


def segment(value: str) -> str:
    """A value placed in a URL path (ids, user principal names, e-mail addresses). A dry-run's
    placeholder for a value not known yet (`<steps.x.output.id>`) is shown as it is."""
    if value.startswith("<") and value.endswith(">"):
        return value
    return quote(value, safe="@")


def temporary_password() -> str:
    """A strong throwaway password for providers that require one at creation; never stored
    or shown (the person signs in through a reset or a temporary access pass)."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(20)) + "!a7Z"


def connection_for(call: StepCall, name: str) -> ResolvedConnection:
    return connections_of(call).resolve(call.application_id, name)


def request(
    call: StepCall,
    connection: str | ResolvedConnection,
    method: str,
    path: str,
    *,
    subject: str,
    recognise: Recognise,
    provider: str,
    body: Any = None,
    params: dict[str, Any] | None = None,
    done: Callable[[Answer], bool] | None = None,
    hidden: tuple[str, ...] = (),
) -> Answer:
    """One call to the provider. A 2xx answer, or one `done` accepts (the work was done
    already, e.g. "already a member"), is returned; any other raises its failure."""
    resolved = (
        connection
        if isinstance(connection, ResolvedConnection)
        else (connection_for(call, connection))
    )
    answer = send(
        call,
        method,
        resolved.url(path),
        connection=resolved,
        params=params,
        json_body=body,
        secrets=hidden,
    )
    if 200 <= answer.status < 300 or (done is not None and done(answer)):
        return answer
    fail(answer, subject, recognise, provider)


def fail(answer: Answer, subject: str, recognise: Recognise, provider: str) -> NoReturn:
    recognised = recognise(answer, subject)
    if recognised is not None:
        raise recognised
    raise_for_status(
        answer,
        accepted=(),
        message=f"{provider} answered HTTP {answer.status} for {subject}: {answer.text[:300]}",
    )
    raise AssertionError("unreachable")  # raise_for_status raised


def already_exists(answer: Answer, subject: str, provider: str, detail: str) -> PermanentError:
    return PermanentError(
        f"{subject} already exists in {provider}: {detail}",
        code="already_exists",
        status_code=answer.status,
        response=answer.record,
        next_action=f"check the existing account in {provider}: remove or rename it, or drop "
        "this step for people who already have one; then Retry",
    )


def not_found(answer: Answer, subject: str, provider: str, detail: str) -> PermanentError:
    return PermanentError(
        f"{subject} does not exist in {provider}: {detail}",
        code="not_found",
        status_code=answer.status,
        response=answer.record,
        next_action=f"create it in {provider} or fix the step's mapping (a dry-run shows "
        "the request), then Retry",
    )


def refused(
    answer: Answer, subject: str, provider: str, detail: str, next_action: str
) -> PermanentError:
    return PermanentError(
        f"{provider} refused the request for {subject} (HTTP {answer.status}): {detail}",
        code="permission_denied" if answer.status in (401, 403) else "refused",
        status_code=answer.status,
        response=answer.record,
        next_action=next_action,
    )


def throttled(
    answer: Answer, subject: str, provider: str, detail: str, retry_after: float | None = None
) -> TransientError:
    return TransientError(
        f"{provider} is throttling requests for {subject}: {detail}",
        code="throttled",
        status_code=answer.status,
        response=answer.record,
        retry_after=retry_after
        if retry_after is not None
        else retry_after_seconds(answer.headers.get("retry-after")),
        next_action=f"{provider} limits the request rate: lower the connection's rate limit, "
        "or wait and Retry",
    )


# --- gate and dry-run -------------------------------------------------------------------------


def references(config: ProfileConfig) -> list[Reference]:
    if is_template(config.connection):
        return []
    return [Reference("connection", config.connection, "connection")]


def preview(
    method: str | Callable[[dict[str, Any]], str],
    path: Callable[[dict[str, Any]], str],
    body: Callable[[dict[str, Any]], Any],
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A dry-run preview in the `http` step's shape, under the connection's base URL."""

    def shown(rendered: dict[str, Any]) -> dict[str, Any]:
        try:
            where, payload = path(rendered), body(rendered)
        except (KeyError, TypeError, ValueError):
            return {"config": redact_keys(rendered)}
        request: dict[str, Any] = {
            "method": method if isinstance(method, str) else method(rendered),
            "url": f"<connection {rendered.get('connection')}>{where}",
        }
        if payload is not None:
            request["body"] = redact_keys(payload)
        return {"request": request}

    return shown


def profile_step(
    name: str,
    summary: str,
    model: type[ProfileConfig],
    execute: Callable[[StepCall], StepResult],
    shown: Callable[[dict[str, Any]], dict[str, Any]],
) -> StepType:
    return StepType(
        name=name,
        summary=summary,
        config_model=model,
        references=references,
        preview=shown,
        execute=execute,
    )
