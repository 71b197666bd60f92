"""Sending one HTTP request for a step, and classifying the answer. The one place where
httpx's errors become Grantflow's failure classes (transient, timeout, permanent)."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from grantflow.connections.access import ResolvedConnection
from grantflow.errors import (
    ConnectorError,
    PermanentError,
    SafetyStop,
    StepTimeout,
    TransientError,
)
from grantflow.redaction import NOTHING, Redactor, redactor_for
from grantflow.safety.limits import limits, response_too_large
from grantflow.steps.execution import StepCall

RESPONSE_LIMIT = 1024 * 1024  # the default of the most we read of a response (see below)


def response_limit() -> int:
    """The most of a response a step reads: GRANTFLOW_RESPONSE_MAX_BYTES."""
    return limits().response_max_bytes


MAX_REDIRECTS = 5
STORED_BODY_LIMIT = 16 * 1024  # the most of a body we keep in the attempt record


@dataclass(frozen=True)
class Answer:
    status: int
    headers: httpx.Headers
    text: str  # the whole body, secrets scrubbed before anything cuts it
    host: str
    raw: str = field(default="", repr=False)  # as received: only parsed, never recorded
    redactor: Redactor = field(default=NOTHING, repr=False)

    @property
    def record(self) -> dict[str, Any]:
        return {
            "status_code": self.status,
            "content_type": self.headers.get("content-type"),
            "body": self.text[:STORED_BODY_LIMIT],
            "truncated": len(self.text) > STORED_BODY_LIMIT,
        }

    def json(self) -> Any:
        """The body parsed, every string in it scrubbed (escapes undone by parsing included)."""
        return self.redactor.value(json.loads(self.raw)) if self.raw else None


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


def send(
    call: StepCall,
    method: str,
    url: str,
    *,
    connection: ResolvedConnection | None = None,
    headers: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    json_body: Any = None,
    form: dict[str, Any] | None = None,
    timeout: float | None = None,
    secrets: tuple[str, ...] = (),
) -> Answer:
    """One request (resent once with a fresh OAuth token after a 401), read up to the cap."""
    limit = (
        min(x for x in (timeout, call.timeout, connection and connection.timeout) if x)
        if any((timeout, call.timeout, connection))
        else 30.0
    )
    host = urlsplit(url).netloc or url
    own = redactor_for(secrets)  # the call's own secrets (e.g. a generated password)

    def attempt(conn: ResolvedConnection | None) -> Answer:
        all_headers = {
            **(conn.headers if conn else {}),
            **(headers or {}),
            "Idempotency-Key": call.idempotency_key,
        }
        extra = {**(conn.params if conn else {}), **(params or {})}
        # (httpx replaces a URL's query with `params`: keep the path's own query parameters)
        all_params = httpx.URL(url).params.merge(extra) if extra else None
        kwargs: dict[str, Any] = {
            "headers": all_headers,
            "params": all_params,
            "timeout": httpx.Timeout(limit),
        }
        if json_body is not None:
            kwargs["json"] = json_body
        elif form is not None:
            kwargs["data"] = form
        hidden = own + conn.redactor if conn else own
        call.secrets.add(hidden)  # what the step returns is scrubbed of them too
        if conn is None:
            return _exchange(call.http, method, url, host, limit, hidden, kwargs)
        return _follow(call.http, method, url, limit, hidden, kwargs, conn)

    def limited(conn: ResolvedConnection | None, fn: Callable[[], Answer]) -> Answer:
        if conn is None or call.connections is None:
            return fn()
        limits = call.connections.limits
        with limits.hold(conn.id, conn.name, conn.rate, conn.burst, conn.concurrency, limit):
            answer = fn()
        if answer.status == 429:  # every worker calling this connection slows down
            wait = retry_after_seconds(answer.headers.get("retry-after"))
            limits.throttled(conn.id, wait, conn.rate, conn.burst)
        return answer

    answer = limited(connection, lambda: attempt(connection))
    if answer.status == 401 and connection is not None and call.connections is not None:
        fresh = call.connections.after_unauthorized(connection)
        if fresh is not None:
            answer = limited(fresh, lambda: attempt(fresh))
    return answer


def _follow(
    client: httpx.Client,
    method: str,
    url: str,
    limit: float,
    redactor: Redactor,
    kwargs: dict[str, Any],
    conn: ResolvedConnection,
) -> Answer:
    """A connection's credential goes only where the connection allows: redirects are
    followed here, each new host checked against the base URL's host and `allowed_hosts`."""
    allowed = {urlsplit(conn.base_url).hostname or ""} | set(conn.allowed_hosts)
    allowed = {h.lower().rstrip(".") for h in allowed}
    for _ in range(MAX_REDIRECTS + 1):
        host = urlsplit(url).netloc or url
        answer = _exchange(client, method, url, host, limit, redactor, kwargs, redirects=False)
        location = answer.headers.get("location")
        if answer.status not in (301, 302, 303, 307, 308) or not location:
            return answer
        target = httpx.URL(url).join(location)
        if target.host.lower().rstrip(".") not in allowed:
            raise SafetyStop(
                f"{host} redirected to {target.host}, which connection {conn.name!r} does not "
                "allow; the request (and its credential) was not sent there",
                code="redirect_refused",
                next_action=f"if {target.host} is expected, add it to the connection's "
                "allowed_hosts",
            )
        if answer.status == 303 or (answer.status in (301, 302) and method == "POST"):
            method = "GET"
            kwargs = {k: v for k, v in kwargs.items() if k not in ("json", "data")}
        url = str(target)
    raise ConnectorError(
        f"more than {MAX_REDIRECTS} redirects from {urlsplit(url).netloc}",
        code="too_many_redirects",
        next_action="check the connection's base URL",
    )


def _exchange(
    client: httpx.Client,
    method: str,
    url: str,
    host: str,
    limit: float,
    redactor: Redactor,
    kwargs: dict[str, Any],
    *,
    redirects: bool = True,
) -> Answer:
    try:
        with client.stream(method, url, follow_redirects=redirects, **kwargs) as response:
            body = bytearray()
            for chunk in response.iter_bytes():
                body.extend(chunk)
                if len(body) > response_limit():
                    raise response_too_large(host, response.status_code)
    except httpx.TimeoutException as exc:
        raise StepTimeout(
            f"{host} did not answer within {limit:g}s",
            next_action="check the target's health, or raise the step timeout",
        ) from exc
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise PermanentError(
            f"the URL {redactor.text(url)!r} cannot be used: {redactor.text(str(exc))}",
            code="url_invalid",
            next_action="fix the step's URL (a dry-run shows it), then Replay with latest",
        ) from exc
    except httpx.TransportError as exc:
        raise TransientError(
            f"could not reach {host}: {type(exc).__name__}: {redactor.text(str(exc))}",
            next_action="check that the target is up and reachable",
        ) from exc
    raw = body.decode("utf-8", errors="replace")
    return Answer(response.status_code, response.headers, redactor.text(raw), host, raw, redactor)


def next_action_for(status: int) -> str:
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


def raise_for_status(
    answer: Answer,
    accepted: Any = range(200, 300),
    message: str | None = None,
    next_action: str | None = None,
) -> None:
    """Unless accepted: 5xx, 408, 429 are transient (with Retry-After); other 4xx permanent."""
    status = answer.status
    if status in accepted:
        return
    snippet = answer.text[:300].strip()
    text = message or (f"HTTP {status} from {answer.host}" + (f": {snippet}" if snippet else ""))
    if status in (408, 429) or status >= 500:
        raise TransientError(
            text,
            status_code=status,
            response=answer.record,
            retry_after=retry_after_seconds(answer.headers.get("retry-after")),
            next_action=next_action
            or "the target is unavailable or throttling: wait for it, then Retry",
        )
    raise PermanentError(
        text,
        status_code=status,
        response=answer.record,
        next_action=next_action or next_action_for(status),
    )
