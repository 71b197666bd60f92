"""`http`: one HTTP request, templated; its JSON response becomes `steps.<id>.output`."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator

from grantflow.definitions.expressions import is_template
from grantflow.durations import Duration
from grantflow.errors import PermanentError, StepTimeout, TransientError
from grantflow.logging import REDACTED, redact
from grantflow.steps.execution import StepCall, StepResult
from grantflow.steps.registry import Reference, StepType

Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
_SAFE_METHODS = {"GET", "HEAD"}
_SECRET_HEADERS = {"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key"}


class HttpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Method = "GET"
    url: str | None = Field(None, description="absolute URL (templated)")
    connection: str | None = Field(None, description="connection name; `path` is relative to it")
    path: str | None = Field(None, description="path under the connection's base URL")
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, Any] = Field(default_factory=dict)
    body: Any = Field(None, description="JSON body (templated; `{{ x }}` keeps x's type)")
    form: dict[str, Any] | None = Field(None, description="form-encoded body")
    expect: list[int] = Field(default_factory=list, description="accepted statuses (default 2xx)")
    request_timeout: Duration = Field(dt.timedelta(seconds=30))
    side_effects: bool | None = Field(None, description="override: does this call change state?")

    @model_validator(mode="after")
    def _target(self) -> HttpConfig:
        if self.url and (self.connection or self.path):
            raise ValueError("give either url, or connection and path, not both")
        if not self.url and not self.connection:
            raise ValueError("give url, or connection and path")
        if self.connection and not self.path:
            raise ValueError("path is required with a connection")
        if self.body is not None and self.form is not None:
            raise ValueError("give body (JSON) or form, not both")
        for code in self.expect:
            if not 100 <= code <= 599:
                raise ValueError(f"expect: {code} is not an HTTP status code")
        return self


def _side_effects(config: HttpConfig) -> bool:
    if config.side_effects is not None:
        return config.side_effects
    return config.method not in _SAFE_METHODS


def _references(config: HttpConfig) -> list[Reference]:
    if config.connection and not is_template(config.connection):
        return [Reference("connection", config.connection, "connection")]
    return []


def _checks(config: HttpConfig) -> list[tuple[str, str]]:
    if config.url and not is_template(config.url):
        parts = urlsplit(config.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return [("url", f"{config.url!r} is not an absolute http(s) URL")]
    return []


def redact_headers(headers: dict[str, Any]) -> dict[str, Any]:
    return {k: REDACTED if k.lower() in _SECRET_HEADERS else v for k, v in redact(headers).items()}


def _preview(rendered: dict[str, Any]) -> dict[str, Any]:
    url = rendered.get("url") or f"<connection {rendered.get('connection')}>{rendered.get('path')}"
    request: dict[str, Any] = {
        "method": rendered.get("method", "GET"),
        "url": url,
        "headers": redact_headers(rendered.get("headers") or {}),
        "query": rendered.get("query") or {},
    }
    if rendered.get("body") is not None:
        request["body"] = redact(rendered["body"])
    if rendered.get("form") is not None:
        request["form"] = redact(rendered["form"])
    return {"request": request}


RESPONSE_LIMIT = 1024 * 1024  # the most we read of a response
STORED_BODY_LIMIT = 16 * 1024  # the most of a body we keep in the attempt record


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: either a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def _secret_values(headers: dict[str, str]) -> list[str]:
    values = []
    for name, value in headers.items():
        if name.lower() in _SECRET_HEADERS or redact({name: value})[name] == REDACTED:
            values.append(value)
            _, _, token = value.partition(" ")
            if len(token) >= 8:
                values.append(token)
    return sorted(values, key=len, reverse=True)


def _next_action(status: int) -> str:
    if status in (401, 403):
        return (
            "the credential is missing, wrong or lacks permission in the target system: "
            "replace it, test the connection, then Retry"
        )
    if status == 404:
        return (
            "the path or an id in it does not exist in the target: check the step's URL "
            "(a dry-run shows it), fix the workflow, then Replay with latest"
        )
    if status == 409:
        return "the target reports a conflict (often: it already exists): check the target"
    return (
        "the request was refused as invalid: check the step's mapping with a dry-run, "
        "fix the workflow, then Replay with latest"
    )


def _execute(call: StepCall) -> StepResult:
    config = HttpConfig.model_validate(call.config)
    if config.url is None:
        raise PermanentError(
            f"connection {config.connection!r} cannot be reached: connections are not "
            "configured in this deployment",
            next_action="use an absolute url in the step, then Replay with latest",
        )
    headers = {**config.headers, "Idempotency-Key": call.idempotency_key}
    secrets = _secret_values(config.headers)
    timeout = config.request_timeout.total_seconds()
    if call.timeout is not None:
        timeout = min(timeout, call.timeout)
    host = urlsplit(config.url).netloc or config.url
    kwargs: dict[str, Any] = {
        "params": config.query or None,
        "headers": headers,
        "timeout": httpx.Timeout(timeout),
    }
    if config.body is not None:
        kwargs["json"] = config.body
    elif config.form is not None:
        kwargs["data"] = config.form
    try:
        with call.http.stream(config.method, config.url, **kwargs) as response:
            body = bytearray()
            for chunk in response.iter_bytes():
                body.extend(chunk)
                if len(body) > RESPONSE_LIMIT:
                    raise PermanentError(
                        f"the response from {host} is larger than {RESPONSE_LIMIT} bytes",
                        status_code=response.status_code,
                        next_action="ask the target for less (filters, paging)",
                    )
    except httpx.TimeoutException as exc:
        raise StepTimeout(
            f"{host} did not answer within {timeout:g}s",
            next_action="check the target's health, or raise the step timeout",
        ) from exc
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise PermanentError(
            f"the URL {config.url!r} cannot be used: {exc}",
            next_action="fix the step's URL, then Replay with latest",
        ) from exc
    except httpx.TransportError as exc:
        raise TransientError(
            f"could not reach {host}: {type(exc).__name__}: {exc}",
            next_action="check that the target is up and reachable",
        ) from exc
    text = _scrub(body.decode("utf-8", errors="replace"), secrets)
    record = {
        "status_code": response.status_code,
        "content_type": response.headers.get("content-type"),
        "body": text[:STORED_BODY_LIMIT],
        "truncated": len(text) > STORED_BODY_LIMIT,
    }
    accepted = config.expect or range(200, 300)
    status = response.status_code
    if status not in accepted:
        snippet = text[:300].strip()
        message = f"HTTP {status} from {host}" + (f": {snippet}" if snippet else "")
        if status in (408, 429) or status >= 500:
            raise TransientError(
                message,
                status_code=status,
                response=record,
                retry_after=retry_after_seconds(response.headers.get("retry-after")),
                next_action="the target is unavailable or throttling: wait for it, then Retry",
            )
        raise PermanentError(
            message, status_code=status, response=record, next_action=_next_action(status)
        )
    output: Any = None
    if text:
        try:
            output = json.loads(text)
        except ValueError:
            output = text
    return StepResult(output=output, response=record)


HTTP_STEP = StepType(
    name="http",
    summary="Send one HTTP request",
    config_model=HttpConfig,
    side_effects=_side_effects,
    references=_references,
    preview=_preview,
    checks=_checks,
    execute=_execute,
)
