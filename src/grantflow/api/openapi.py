"""The error answers every route can give, written into the OpenAPI document in one place.

Routes declare what they return on success; what they can answer on failure follows from their
shape, so it is derived here rather than repeated on each route: a guarded route can answer 401
and 403, and 503 when the database is away; a route with parameters or a body 422; a route with
a body 400 (malformed JSON), 413 and 415 (refused by the request middleware before any
parsing); a route with a path parameter or a body 404 (a body can name an object that does not
exist); a route with a path parameter 400 and 409 too (an id prefix too short or ambiguous); a
route that changes something 409. Every error body has the one shape
`{"error": {...}}` (`api/errors.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from grantflow.api.idempotency import KEY_HEADER, REPLAYED_HEADER
from grantflow.api.security import Guard, Require

_WRITES = {"POST", "PUT", "PATCH", "DELETE"}
_BODIES = {"POST", "PUT", "PATCH"}


class ErrorDetail(BaseModel):
    """One field that is wrong."""

    model_config = ConfigDict(extra="allow")

    field: str | None = None
    message: str | None = None
    type: str | None = None


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="allow")  # an error may name its target (`target_id`, ...)

    code: str = Field(description="stable, machine-readable")
    message: str = Field(description="what is wrong, naming the field")
    failure_class: str
    next_action: str | None = None
    details: list[ErrorDetail] | None = None
    request_id: str | None = None


class ErrorOut(BaseModel):
    error: ErrorBody


_DESCRIPTIONS = {
    400: "malformed request: the body is not valid JSON, or a parameter cannot be read",
    401: "no valid API token",
    403: "the token's user lacks the permission this route needs",
    404: "the object named in the path does not exist",
    409: "the change conflicts with the object's current state (or an existing name)",
    413: "the request body is larger than the limit",
    415: "the request body's Content-Type is not accepted",
    422: "the request is not valid; the message and details name each field",
    503: "the database is unavailable; retry (see Retry-After)",
}


def error_statuses(route: APIRoute, guard: Guard | None) -> list[int]:
    """The error statuses `route` can answer, from its shape."""
    methods = route.methods or set()
    statuses: set[int] = set()
    if isinstance(guard, Require):
        statuses |= {401, 403, 503}
    dependant = route.dependant
    params = [
        *dependant.path_params,
        *dependant.query_params,
        *dependant.header_params,
        *dependant.body_params,
    ]
    if params or route.body_field is not None or methods & _BODIES:
        statuses.add(422)
    if methods & _BODIES:
        statuses |= {400, 413, 415}
    if any(not p.field_info.exclude for p in dependant.query_params):
        statuses.add(400)  # e.g. a forged pagination cursor
    if dependant.path_params or methods & _BODIES:
        statuses.add(404)  # (a body can name another object: a grant's identity)
    if dependant.path_params:
        # an id prefix: too short is 400, ambiguous 409; the object may not be in the state
        # the route reads (a workflow that has no webhook)
        statuses |= {400, 409}
    if methods & _WRITES:
        statuses.add(409)
    return sorted(statuses)


_REPLAYED = {
    "description": "true when this is the stored response to an earlier request with the same "
    "Idempotency-Key (nothing was created again)",
    "schema": {"type": "string", "enum": ["true"]},
}


def _takes_idempotency_key(operation: dict[str, Any]) -> bool:
    return any(
        p.get("in") == "header" and p.get("name") == KEY_HEADER
        for p in operation.get("parameters", [])
    )


def document_errors(app: FastAPI, guard_of: Callable[[APIRoute], Guard | None]) -> None:
    """Make `app.openapi()` add the error answers to every API route's responses (keeping any
    a route describes itself), with the one error schema."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = plain()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        error_schema = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(error_schema.pop("$defs", {}))
        schemas["ErrorOut"] = error_schema
        content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
        for route in app.routes:
            if not isinstance(route, APIRoute) or not route.include_in_schema:
                continue
            for method in route.methods or ():
                operation = document["paths"].get(route.path_format, {}).get(method.lower())
                if operation is None:
                    continue
                responses = operation.setdefault("responses", {})
                for status in error_statuses(route, guard_of(route)):
                    responses.setdefault(str(status), {"description": _DESCRIPTIONS[status]})
                for status, answer in responses.items():
                    if status[0] in "45":  # (FastAPI's own 422 schema is not what we send)
                        answer["content"] = content
                    elif status[0] == "2" and _takes_idempotency_key(operation):
                        answer.setdefault("headers", {})[REPLAYED_HEADER] = _REPLAYED
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
