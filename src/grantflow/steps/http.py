"""`http`: one HTTP request, templated; its JSON response becomes `steps.<id>.output`."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from grantflow.definitions.expressions import is_template
from grantflow.durations import Duration
from grantflow.redaction import REDACTED, redact_keys, redact_url
from grantflow.steps.execution import StepCall, StepResult, connections_of
from grantflow.steps.registry import Reference, StepType
from grantflow.steps.transport import raise_for_status, send

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
    return {
        k: REDACTED if k.lower() in _SECRET_HEADERS else v for k, v in redact_keys(headers).items()
    }


def _preview(rendered: dict[str, Any]) -> dict[str, Any]:
    # `rendered` is not validated yet (a dry run previews invalid configs too): any type
    url = rendered.get("url") or f"<connection {rendered.get('connection')}>{rendered.get('path')}"
    headers = rendered.get("headers")
    request: dict[str, Any] = {
        "method": rendered.get("method", "GET"),
        "url": redact_url(str(url)),
        "headers": redact_headers(headers) if isinstance(headers, dict) else redact_keys(headers),
        "query": redact_keys(rendered.get("query") or {}),
    }
    if rendered.get("body") is not None:
        request["body"] = redact_keys(rendered["body"])
    if rendered.get("form") is not None:
        request["form"] = redact_keys(rendered["form"])
    return {"request": request}


def _secret_values(headers: dict[str, str]) -> tuple[str, ...]:
    values = []
    for name, value in headers.items():
        if name.lower() in _SECRET_HEADERS or redact_keys({name: value})[name] == REDACTED:
            values.append(value)
            _, _, token = value.partition(" ")
            if len(token) >= 8:
                values.append(token)
    return tuple(sorted(values, key=len, reverse=True))


def _execute(call: StepCall) -> StepResult:
    config = HttpConfig.model_validate(call.config)
    connection = None
    if config.connection:
        connection = connections_of(call).resolve(call.application_id, config.connection)
        url = connection.url(config.path or "/")
    else:
        assert config.url is not None
        url = config.url
    answer = send(
        call,
        config.method,
        url,
        connection=connection,
        headers=config.headers,
        params=config.query,
        json_body=config.body,
        form=config.form,
        timeout=config.request_timeout.total_seconds(),
        secrets=_secret_values(config.headers),
    )
    raise_for_status(answer, config.expect or range(200, 300))
    output: Any = None
    if answer.text:
        try:
            output = answer.json()  # parsed, then scrubbed: escapes cannot hide a secret
        except ValueError:
            output = answer.text
    return StepResult(output=output, response=answer.record)


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
