"""/scim/v2: inbound SCIM 2.0 for an HR system or identity provider (tokens of scope `scim`).

The routes only speak HTTP: the protocol lives in `grantflow.access.scim`. Errors raised here
leave as SCIM Error documents (see `grantflow.api.errors`), with Content-Type
application/scim+json like every response of this router.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from scim2_models import Context, Resource, SCIMException, UniquenessException
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException

from grantflow.access.scim import discovery, groups, search, users
from grantflow.access.scim.protocol import decode_json, error_document, error_of, not_modified
from grantflow.access.scim.resources import BASE_PATH, MEDIA_TYPE, POLICY
from grantflow.api.security import Require
from grantflow.api.state import database, queue
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.errors import GrantflowError
from grantflow.queue.interface import Queue
from grantflow.store.database import Database

log = structlog.get_logger("grantflow.api")

router = APIRouter(prefix=BASE_PATH, tags=["scim"], include_in_schema=False)

READ = Require(Permission.IDENTITY_READ, scope="scim")
WRITE = Require(Permission.IDENTITY_WRITE, scope="scim")


async def body(request: Request) -> Any:
    """The JSON body (application/scim+json or application/json); bad JSON is 400 invalidSyntax."""
    return decode_json(await request.body())


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/") + BASE_PATH


def scim_response(
    content: dict[str, Any] | None, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    payload = b"" if content is None else json.dumps(content).encode()
    return Response(payload, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def resource_response(
    resource: Resource[Any],
    context: Context,
    parameters: Any = None,
    status: int = 200,
    created: bool = False,
) -> Response:
    assert resource.meta is not None and resource.meta.location is not None
    headers = {"Content-Location": resource.meta.location}
    if resource.meta.version:
        headers["ETag"] = resource.meta.version
    if created:
        headers["Location"] = resource.meta.location
    content = resource.model_dump(
        scim_ctx=context, response_parameters=parameters, scim_policy=POLICY
    )
    return scim_response(content, status, headers)


@contextmanager
def writing(db: Database) -> Iterator[Session]:
    """A transaction whose unique-key race (two pushes of one userName at once) is a 409."""
    try:
        with db.transaction() as session:
            yield session
    except IntegrityError:
        raise UniquenessException(
            detail="a user or group with the same unique attribute was created meanwhile"
        ) from None


# -- discovery ---------------------------------------------------------------------------------


@router.get("/ServiceProviderConfig")
def service_provider_config(request: Request, _: Actor = Depends(READ)) -> Response:
    return scim_response(discovery.service_provider_config(base_url(request), request.query_params))


@router.get("/ResourceTypes")
def resource_types(request: Request, _: Actor = Depends(READ)) -> Response:
    return scim_response(discovery.resource_types(base_url(request), request.query_params))


@router.get("/ResourceTypes/{type_id}")
def resource_type(type_id: str, request: Request, _: Actor = Depends(READ)) -> Response:
    return scim_response(discovery.resource_type(base_url(request), type_id, request.query_params))


@router.get("/Schemas")
def schemas(request: Request, _: Actor = Depends(READ)) -> Response:
    return scim_response(discovery.schemas(base_url(request), request.query_params))


@router.get("/Schemas/{schema_id}")
def schema(schema_id: str, request: Request, _: Actor = Depends(READ)) -> Response:
    return scim_response(discovery.schema(base_url(request), schema_id, request.query_params))


# -- searches ----------------------------------------------------------------------------------


def _search(db: Database, kinds: list[search.Kind], payload: Any, url: str) -> Response:
    if not isinstance(payload, dict):
        payload = {}
    request = search.read_search([k.model for k in kinds], payload)
    with db.transaction() as session:
        return scim_response(search.search(session, kinds, request, url))


def _query(request: Request) -> dict[str, str]:
    return {k: request.query_params[k] for k in search.PARAMETERS if k in request.query_params}


@router.get("/Users")
def list_users(
    request: Request, _: Actor = Depends(READ), db: Database = Depends(database)
) -> Response:
    return _search(db, [users.USERS], _query(request), base_url(request))


@router.post("/Users/.search")
def search_users(
    request: Request,
    _: Actor = Depends(READ),
    payload: Any = Depends(body),
    db: Database = Depends(database),
) -> Response:
    return _search(db, [users.USERS], payload, base_url(request))


@router.get("/Groups")
def list_groups(
    request: Request, _: Actor = Depends(READ), db: Database = Depends(database)
) -> Response:
    return _search(db, [groups.GROUPS], _query(request), base_url(request))


@router.post("/Groups/.search")
def search_groups(
    request: Request,
    _: Actor = Depends(READ),
    payload: Any = Depends(body),
    db: Database = Depends(database),
) -> Response:
    return _search(db, [groups.GROUPS], payload, base_url(request))


@router.post("/.search")
def search_all(
    request: Request,
    _: Actor = Depends(READ),
    payload: Any = Depends(body),
    db: Database = Depends(database),
) -> Response:
    """A search over users and groups at once (RFC 7644 §3.4.3)."""
    return _search(db, [users.USERS, groups.GROUPS], payload, base_url(request))


# -- one resource ------------------------------------------------------------------------------


def _get(
    request: Request,
    db: Database,
    kind: search.Kind,
    load: Callable[[Session, str, str, bool], Resource[Any]],
    resource_id: str,
) -> Response:
    parameters = search.read_response_parameters(kind.model, request.query_params)
    with db.transaction() as session:
        resource = load(
            session, resource_id, base_url(request), search.wants(parameters, kind.link)
        )
    assert resource.meta is not None and resource.meta.version is not None
    if not_modified(request.headers.get("if-none-match"), resource.meta.version):
        return Response(status_code=304, headers={"ETag": resource.meta.version})
    return resource_response(resource, Context.RESOURCE_QUERY_RESPONSE, parameters)


@router.post("/Users", status_code=201)
def create_user(
    request: Request,
    actor: Actor = Depends(WRITE),
    payload: Any = Depends(body),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
) -> Response:
    parameters = search.read_response_parameters(users.USERS.model, request.query_params)
    with writing(db) as session:
        user = users.create(session, actor, q, payload, base_url(request))
    return resource_response(
        user, Context.RESOURCE_CREATION_RESPONSE, parameters, status=201, created=True
    )


@router.get("/Users/{user_id}")
def get_user(
    user_id: str, request: Request, _: Actor = Depends(READ), db: Database = Depends(database)
) -> Response:
    return _get(request, db, users.USERS, users.get, user_id)


@router.put("/Users/{user_id}")
def replace_user(
    user_id: str,
    request: Request,
    actor: Actor = Depends(WRITE),
    payload: Any = Depends(body),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
) -> Response:
    parameters = search.read_response_parameters(users.USERS.model, request.query_params)
    with writing(db) as session:
        user = users.replace(
            session, actor, q, user_id, payload, base_url(request), request.headers.get("if-match")
        )
    return resource_response(user, Context.RESOURCE_REPLACEMENT_RESPONSE, parameters)


@router.patch("/Users/{user_id}")
def patch_user(
    user_id: str,
    request: Request,
    actor: Actor = Depends(WRITE),
    payload: Any = Depends(body),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
) -> Response:
    parameters = search.read_response_parameters(users.USERS.model, request.query_params)
    with writing(db) as session:
        user = users.patch(
            session, actor, q, user_id, payload, base_url(request), request.headers.get("if-match")
        )
    return resource_response(user, Context.RESOURCE_REPLACEMENT_RESPONSE, parameters)


@router.delete("/Users/{user_id}", status_code=204)
def delete_user(
    user_id: str,
    request: Request,
    actor: Actor = Depends(WRITE),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
) -> Response:
    with writing(db) as session:
        users.delete(session, actor, q, user_id, request.headers.get("if-match"))
    return Response(status_code=204)


@router.post("/Groups", status_code=201)
def create_group(
    request: Request,
    actor: Actor = Depends(WRITE),
    payload: Any = Depends(body),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
) -> Response:
    parameters = search.read_response_parameters(groups.GROUPS.model, request.query_params)
    with writing(db) as session:
        group = groups.create(session, actor, q, payload, base_url(request))
    return resource_response(
        group, Context.RESOURCE_CREATION_RESPONSE, parameters, status=201, created=True
    )


@router.get("/Groups/{group_id}")
def get_group(
    group_id: str, request: Request, _: Actor = Depends(READ), db: Database = Depends(database)
) -> Response:
    return _get(request, db, groups.GROUPS, groups.get, group_id)


@router.put("/Groups/{group_id}")
def replace_group(
    group_id: str,
    request: Request,
    actor: Actor = Depends(WRITE),
    payload: Any = Depends(body),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
) -> Response:
    parameters = search.read_response_parameters(groups.GROUPS.model, request.query_params)
    with writing(db) as session:
        group = groups.replace(
            session, actor, q, group_id, payload, base_url(request), request.headers.get("if-match")
        )
    return resource_response(group, Context.RESOURCE_REPLACEMENT_RESPONSE, parameters)


@router.patch("/Groups/{group_id}")
def patch_group(
    group_id: str,
    request: Request,
    actor: Actor = Depends(WRITE),
    payload: Any = Depends(body),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
) -> Response:
    parameters = search.read_response_parameters(groups.GROUPS.model, request.query_params)
    with writing(db) as session:
        group = groups.patch(
            session,
            actor,
            q,
            group_id,
            payload,
            base_url(request),
            request.headers.get("if-match"),
            search.wants(parameters, "members"),
        )
    return resource_response(group, Context.RESOURCE_REPLACEMENT_RESPONSE, parameters)


@router.delete("/Groups/{group_id}", status_code=204)
def delete_group(
    group_id: str,
    request: Request,
    actor: Actor = Depends(WRITE),
    db: Database = Depends(database),
    q: Queue = Depends(queue),
) -> Response:
    with writing(db) as session:
        groups.delete_group(session, actor, q, group_id, request.headers.get("if-match"))
    return Response(status_code=204)


# -- errors ------------------------------------------------------------------------------------


def is_scim(request: Request) -> bool:
    return request.url.path.startswith(BASE_PATH + "/") or request.url.path == BASE_PATH


def error_response(request: Request, exc: Exception) -> Response:
    """Any error under /scim/v2 as an RFC 7644 §3.12 Error document (the app's error handlers
    call this for SCIM paths), 401 with its Bearer challenge."""
    headers: dict[str, str] = {}
    if isinstance(exc, RequestValidationError):
        errors = exc.errors()
        invalid_json = any(e.get("type") == "json_invalid" for e in errors)
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
        status = 400
        content = error_document(400, detail, "invalidSyntax" if invalid_json else "invalidValue")
    elif isinstance(exc, StarletteHTTPException):
        status = exc.status_code
        messages = {
            404: f"no such SCIM endpoint: {request.url.path}",
            405: f"{request.method} is not allowed on {request.url.path}",
        }
        content = error_document(status, messages.get(status, str(exc.detail)))
        headers.update(exc.headers or {})
    else:
        if not isinstance(exc, SCIMException | GrantflowError):
            log.exception("http.unhandled", error_type=type(exc).__name__)
        status, content = error_of(exc)
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return scim_response(content, status, headers)
