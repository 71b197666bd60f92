"""One ASGI middleware for what every request needs: a request id, a log line, metrics,
and the guards that must act before any parsing: the body's size limit and JSON content type,
and text that cannot be stored (a NUL character or a lone surrogate anywhere in the path, the
query or a JSON body: `grantflow.strict`)."""

from __future__ import annotations

import html
import json
import re
import time
import uuid
from itertools import accumulate
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from grantflow.strict import MAX_JSON_DEPTH, text_problem, unstorable

log = structlog.get_logger("grantflow.api")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
_BODY_METHODS = {"POST", "PUT", "PATCH"}
# JSON everywhere; YAML too, where a route reads a workflow document (the route decides).
_ACCEPTED_TYPES = re.compile(r"^(application/([a-z0-9.+-]*\+)?json|(application|text)/(x-)?yaml)$")
# uploads (evidence files, CSV imports; and the console's forms for both) take multipart or
# CSV bodies, up to their own limit
_UPLOAD_PATHS = re.compile(
    r"^/api/v1/(runs/[^/]+/evidence|identities/import|identity-imports)$"
    r"|^/(runs/[^/]+/evidence|identity-imports)$"
)
# paths whose answers are not console pages (the API, SCIM, webhooks, probes): refused in JSON
_NOT_A_PAGE = ("/api/", "/scim/", "/hooks/", "/healthz", "/readyz", "/metrics")
_UPLOAD_TYPES = re.compile(r"^(multipart/form-data|text/csv)$")
_JSON_TYPES = re.compile(r"^application/([a-z0-9.+-]*\+)?json$")
# A JSON body can only carry a NUL or a lone surrogate as an escape (raw control characters are
# not JSON): only a body with one of these is parsed and walked here.
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}

Refusal = tuple[int, str, str, str] | tuple[int, str, str, str, list[dict[str, str]]]


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "grantflow_http_requests",
            "HTTP requests handled",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "grantflow_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=registry,
        )


class RequestMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        metrics: HttpMetrics,
        max_upload_bytes: int | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # multipart framing adds a little to the file itself
        self.max_upload_bytes = max(max_upload_bytes or 0, max_body_bytes) + 64 * 1024
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        incoming = headers.get("x-request-id", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            refusal = _unstorable_address(scope) or self._refuse_body(scope, headers)
            if refusal is None and scope["method"] in _BODY_METHODS:
                receive, refusal = await self._buffered(receive, self._limit(scope), headers)
            if refusal is not None:
                path = scope["path"]
                if path.startswith(_NOT_A_PAGE):
                    scim = path.startswith("/scim/")
                    await _send_error(send_with_id, request_id, *refusal, scim=scim)
                else:  # a console page's form: a page in words, not JSON in the browser
                    back = _same_site_path(headers.get("referer", ""))
                    await _send_page(send_with_id, request_id, back, *refusal)
                return
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(elapsed)
            log.info(
                "http.request",
                method=method,
                path=scope["path"],
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )
            structlog.contextvars.unbind_contextvars("request_id")

    def _limit(self, scope: Scope) -> int:
        upload = _UPLOAD_PATHS.match(scope["path"])
        return self.max_upload_bytes if upload else self.max_body_bytes

    def _too_large(self, limit: int) -> tuple[int, str, str, str]:
        return (
            413,
            "payload_too_large",
            f"the request body is larger than the limit of {limit} bytes",
            "send a smaller body, or raise GRANTFLOW_MAX_BODY_BYTES "
            "(GRANTFLOW_EVIDENCE_MAX_BYTES for evidence files)",
        )

    def _refuse_body(
        self, scope: Scope, headers: dict[str, str]
    ) -> tuple[int, str, str, str] | None:
        path = scope["path"]
        if scope["method"] not in _BODY_METHODS or not path.startswith(("/api/", "/scim/")):
            return None
        limit = self._limit(scope)
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return self._too_large(limit)
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        has_body = (length not in (None, "0")) or "transfer-encoding" in headers
        upload = _UPLOAD_PATHS.match(path) and _UPLOAD_TYPES.match(content_type)
        if has_body and not upload and not _ACCEPTED_TYPES.match(content_type):
            return (
                415,
                "unsupported_media_type",
                f"Content-Type {content_type or '(none)'!r} is not accepted here; "
                "the API takes application/json (and YAML for workflow documents)",
                "send the body as JSON with Content-Type: application/json",
            )
        return None

    async def _buffered(
        self, receive: Receive, limit: int, headers: dict[str, str]
    ) -> tuple[Receive, Refusal | None]:
        """Read the body up to the limit before the app sees it (chunked bodies have no
        Content-Length to check), then replay it."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                return receive, self._too_large(limit)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if _JSON_TYPES.match(content_type):
            refusal = _too_deep(body)
            if refusal is None and _SUSPECT_ESCAPE.search(body):
                refusal = _unstorable_json(body)
            if refusal is not None:
                return receive, refusal
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay, None


def _unstorable_refusal(found: list[tuple[str, str]]) -> Refusal:
    summary = "; ".join(f"{field}: {problem}" for field, problem in found[:5])
    return (
        422,
        "validation_error",
        f"the request is not valid: {summary}",
        "remove the character; Grantflow cannot store it (PostgreSQL refuses NUL in text, "
        "and a lone surrogate is not Unicode)",
        [{"field": f, "message": p, "type": "unstorable_text"} for f, p in found],
    )


def _unstorable_address(scope: Scope) -> Refusal | None:
    """A NUL character in the path or the query string (a lone surrogate cannot reach here:
    percent-decoding replaces invalid UTF-8)."""
    path = scope["path"]
    found = [("path", problem)] if (problem := text_problem(path)) else []
    query = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True):
        if problem := text_problem(name) or text_problem(value):
            found.append((f"query.{name}", problem))
    return _unstorable_refusal(found) if found else None


def _too_deep(body: bytes) -> Refusal | None:
    """A JSON body nested deeper than MAX_JSON_DEPTH, counted on its brackets outside strings
    without parsing it (the counting runs in C: a megabyte takes milliseconds)."""
    if body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH:
        return None
    # Outside strings: drop escaped backslashes, then escaped quotes; every quote left opens
    # or closes a string, so every other piece between quotes is outside one.
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(unescaped.split(b'"')[::2]).translate(None, _NOT_BRACKETS)
    if max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0) <= MAX_JSON_DEPTH:
        return None
    message = f"is nested more than {MAX_JSON_DEPTH} levels deep"
    return (
        422,
        "validation_error",
        f"the request is not valid: body: {message}",
        "send flatter data",
        [{"field": "body", "message": message, "type": "too_deep"}],
    )


def _unstorable_json(body: bytes) -> Refusal | None:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None  # the app answers 400 malformed_json
    found = unstorable(document, "body")
    return _unstorable_refusal(found) if found else None


def _same_site_path(referer: str) -> str:
    """The path (and query) of the page a form was sent from, to link back to; else "/"."""
    parts = urlsplit(referer)
    # (not "//host" nor "/\\host", which browsers take for another site)
    if not parts.path.startswith("/") or parts.path.startswith(("//", "/\\")):
        return "/"
    return parts.path + (f"?{parts.query}" if parts.query else "")


async def _send_page(
    send: Send,
    request_id: str,
    back: str,
    status: int,
    code: str,
    message: str,
    next_action: str,
    _details: list[dict[str, str]] | None = None,
) -> None:
    """A refusal as a plain HTML page, for a console form refused before the console sees it
    (a file over the limit): what is wrong, what to do, and the way back."""
    body = (
        '<!doctype html><html lang=en><head><meta charset=utf-8><link rel=icon href="data:,">'
        f"<title>Refused: {html.escape(code)}</title></head><body>"
        f"<h1>The request was refused</h1><p>{html.escape(message[:1].upper() + message[1:])}.</p>"
        f"<p>Next: {html.escape(next_action)}.</p>"
        f'<p><a href="{html.escape(back)}">Back to the page</a></p>'
        f"<p><small>Request {html.escape(request_id)}</small></p></body></html>"
    )
    payload = body.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _send_error(
    send: Send,
    request_id: str,
    status: int,
    code: str,
    message: str,
    next_action: str,
    details: list[dict[str, str]] | None = None,
    *,
    scim: bool = False,
) -> None:
    error: dict[str, Any] = {
        "code": code,
        "message": message,
        "failure_class": "validation",
        "next_action": next_action,
        "request_id": request_id,
    }
    if details:
        error["details"] = details
    body: dict[str, Any] = {"error": error}
    if scim:  # under /scim/v2 errors are SCIM Error documents (RFC 7644 §3.12)
        body = {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": str(status),
            "detail": f"{message} (next: {next_action})",
        }
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/scim+json" if scim else b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
