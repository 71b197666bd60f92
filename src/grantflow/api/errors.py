"""The one error handler: every error leaves as `{"error": {code, message, ...}}`."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from grantflow.errors import Conflict, GrantflowError, InternalError, ServiceUnavailable

log = structlog.get_logger("grantflow.api")

Handler = Callable[[Request, Exception], Awaitable[Response]]


def error_response(request: Request, status: int, body: dict[str, Any]) -> JSONResponse:
    body["request_id"] = getattr(request.state, "request_id", None)
    # (a signed webhook delivery is not asked for a bearer token)
    bearer = status == 401 and not request.url.path.startswith("/hooks/")
    headers = {"WWW-Authenticate": "Bearer"} if bearer else None
    return JSONResponse({"error": body}, status_code=status, headers=headers)


_QUOTED = re.compile(r"'([^']*)'")  # the choices in pydantic's "Input should be 'a' or 'b'"


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


async def _on_grantflow_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GrantflowError)
    if exc.http_status >= 500:
        log.error("http.error", code=exc.code, message=exc.message)
    return error_response(request, exc.http_status, exc.to_dict())


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(err.get("type") == "json_invalid" for err in errors):
        detail = errors[0].get("ctx", {}).get("error", "invalid JSON")
        return error_response(
            request,
            400,
            {
                "code": "malformed_json",
                "message": f"the request body is not valid JSON: {detail}",
                "failure_class": "validation",
                "next_action": "send a JSON document with Content-Type: application/json",
            },
        )
    details = []
    for err in errors:
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field; remove it (check the spelling of the field name)"
        elif err["type"] in ("literal_error", "enum"):
            choices = _QUOTED.findall(str(err.get("ctx", {}).get("expected", "")))
            if choices:
                message = f"must be one of {', '.join(choices)}, not {err.get('input')!r}"
        details.append({"field": _field_path(err["loc"]), "message": message, "type": err["type"]})
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
    return error_response(
        request,
        422,
        {
            "code": "validation_error",
            "message": f"the request is not valid: {summary}",
            "failure_class": "validation",
            "details": details,
        },
    )


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {400: "malformed_body", 404: "not_found", 405: "method_not_allowed"}
    messages = {
        400: f"the request body could not be read: {exc.detail}",
        404: f"no such endpoint: {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
    }
    response = error_response(
        request,
        exc.status_code,
        {
            "code": codes.get(exc.status_code, "http_error"),
            "message": messages.get(exc.status_code, str(exc.detail)),
            "failure_class": "validation",
        },
    )
    response.headers.update(exc.headers or {})
    if exc.status_code == 405:
        response.headers["Allow"] = ", ".join(_allowed_methods(request))
    return response


def _allowed_methods(request: Request) -> list[str]:
    """Every method served on this path by routes of the path template that answered 405
    (Starlette names only that first route's, and each of our routes serves one method)."""
    routes = request.app.router.routes
    path = next(
        (r.path for r in routes if r.matches({**request.scope, "method": "GET"})[0] != Match.NONE),
        None,
    )
    methods: set[str] = set()
    for route in routes:
        if getattr(route, "path", None) == path:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


async def _on_database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The database went away (a restart, a failover): a 503 to retry, never a 500. The pool
    drops the dead connections, so the retry gets fresh ones."""
    log.warning("http.database_unavailable", error_type=type(exc).__name__)
    error = ServiceUnavailable(
        "the database is unavailable right now",
        next_action="retry in a moment",
        code="database_unavailable",
    )
    response = error_response(request, 503, error.to_dict())
    response.headers["Retry-After"] = "1"
    return response


async def _on_integrity_error(request: Request, exc: Exception) -> JSONResponse:
    """A unique key taken between a service's own check and its write (two requests racing,
    or a check that missed a case) is the 409 the check would have given, naming the field;
    any other integrity error is a fault in Grantflow."""
    assert isinstance(exc, IntegrityError)
    database = request.app.state.grantflow.database
    if not database.is_unique_violation(exc):
        return await _on_unexpected(request, exc)
    column = database.unique_violation_column(exc)
    field = f"body.{column}" if column else "body"
    error = Conflict(
        f"{column or 'a unique value'}: already used by another record",
        code="conflict",
        next_action="choose another value, or update the existing record",
        details=[{"field": field, "message": "already used"}],
    )
    return error_response(request, 409, error.to_dict())


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("http.unhandled", error_type=type(exc).__name__)
    return error_response(request, 500, InternalError("an unexpected error occurred").to_dict())


_SCIM_PATHS = "/scim/"  # (checked before importing the SCIM module: see install_error_handlers)


def _scim_aware(handler: Handler) -> Handler:
    """Under /scim/v2 every error is a SCIM Error document (RFC 7644 §3.12) instead; on a
    console page, an HTML page in words (or a redirect to sign in)."""

    async def handle(request: Request, exc: Exception) -> Response:
        from grantflow.console import errors as console_errors

        if request.url.path.startswith(_SCIM_PATHS):
            from grantflow.api.routes import scim

            if scim.is_scim(request):
                return scim.error_response(request, exc)
        if console_errors.is_console(request):
            return await console_errors.handle(request, exc)
        moved = console_errors.browser_link(request, exc)
        if moved is not None:
            return moved
        return await handler(request, exc)

    return handle


def install_error_handlers(app: FastAPI, *, scim: bool = True) -> None:
    """The handlers; `scim`: the SCIM service is mounted (its own exception type is handled)."""
    app.add_exception_handler(GrantflowError, _scim_aware(_on_grantflow_error))
    app.add_exception_handler(RequestValidationError, _scim_aware(_on_validation_error))
    app.add_exception_handler(StarletteHTTPException, _scim_aware(_on_http_error))
    if scim:
        from scim2_models import SCIMException

        app.add_exception_handler(SCIMException, _scim_aware(_on_unexpected))
    app.add_exception_handler(IntegrityError, _scim_aware(_on_integrity_error))
    app.add_exception_handler(OperationalError, _scim_aware(_on_database_unavailable))
    app.add_exception_handler(InterfaceError, _scim_aware(_on_database_unavailable))
    app.add_exception_handler(Exception, _scim_aware(_on_unexpected))
