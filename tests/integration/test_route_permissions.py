"""Deny by default: every route declares one guard, and every guarded route refuses over HTTP."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute

from grantflow.api import create_app
from grantflow.api.app import api_routes, route_guard
from grantflow.api.docs import DOCS_PATH
from grantflow.api.routes import health
from grantflow.api.routes.hooks import Signed
from grantflow.api.security import Public, Require
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import ROLE_PERMISSIONS, Permission, Role
from grantflow.auth.tokens import create_token, scim_service_user
from grantflow.config import Settings
from grantflow.console.app import STATIC_PATH
from grantflow.console.guard import Page, PublicPage
from grantflow.store.database import Database
from tests.conftest import Api

PUBLIC_PATHS = {"/healthz", "/readyz", "/metrics"}
# token-less because each request carries its own HMAC signature, checked before anything
SIGNED_PATHS = {"/hooks/{workflow_key}"}
_PATH_PARAM = re.compile(r"\{[^}]+\}")
SCIM_ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


def _guarded(app: FastAPI) -> list[tuple[APIRoute, Require]]:
    routes = []
    for route in api_routes(app):
        guard = route_guard(route)
        if isinstance(guard, Require):
            routes.append((route, guard))
    return routes


def _requests(app: FastAPI, scope: str = "api") -> list[tuple[str, str, Permission]]:
    """(method, concrete path, permission) for every method of every guarded route whose
    token scope is `scope` (api: /api/v1, scim: /scim/v2)."""
    return [
        (method, _PATH_PARAM.sub("00000000-dummy", route.path), guard.permission)
        for route, guard in _guarded(app)
        if guard.scope == scope
        for method in sorted(route.methods or ())
    ]


def _scim_token(api: Api) -> str:
    """A token of scope scim, as `grantflow tokens create --scope scim` makes one."""
    actor = Actor.system("test")
    with api.database.transaction() as session:
        user_id = scim_service_user(session, actor)
        _, raw = create_token(
            session, actor, user_id=user_id, name="idp", ttl_days=30, scope="scim"
        )
    return raw


def _scim_error(response: httpx.Response, status: int) -> str:
    """The detail of a SCIM Error document (RFC 7644 §3.12) with this status."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/scim+json")
    body = response.json()
    assert body["schemas"] == [SCIM_ERROR]
    assert body["status"] == str(status)
    detail: str = body["detail"]
    return detail


def _call(client: httpx.Client, method: str, path: str) -> httpx.Response:
    body = {} if method in {"POST", "PUT", "PATCH"} else None
    return client.request(method, path, json=body)


def test_every_route_declares_exactly_one_guard(settings: Settings, database: Database) -> None:
    """Each APIRoute has a Require or Public guard; only the probes and metrics are Public."""
    app = create_app(settings, database)
    routes = api_routes(app)
    guards = {route.path + str(sorted(route.methods or ())): route_guard(route) for route in routes}
    assert all(isinstance(g, Require | Public | Page | PublicPage) for g in guards.values()), guards
    public = {
        route.path
        for route in routes
        if isinstance(route_guard(route), Public) and not isinstance(route_guard(route), Signed)
    }
    assert public == PUBLIC_PATHS
    signed = {route.path for route in routes if isinstance(route_guard(route), Signed)}
    assert signed == SIGNED_PATHS
    pages = [route for route in routes if isinstance(route_guard(route), Page | PublicPage)]
    assert len(_guarded(app)) == len(routes) - len(PUBLIC_PATHS) - len(SIGNED_PATHS) - len(pages)
    assert not any(route.path.startswith(("/api/", "/scim/")) for route in pages)
    assert {r.path for r in routes if r.path.startswith(("/api/v1/", "/scim/v2/"))} == {
        r.path for r, _ in _guarded(app)
    }
    # /scim/v2 takes tokens of scope scim only, and every other route tokens of scope api
    scopes = {route.path: guard.scope for route, guard in _guarded(app)}
    assert {p for p, scope in scopes.items() if scope == "scim"} == {
        p for p in scopes if p.startswith("/scim/v2/")
    }
    assert set(scopes.values()) == {"api", "scim"}
    assert {guard.permission for _, guard in _guarded(app) if guard.scope == "scim"} == {
        Permission.IDENTITY_READ,
        Permission.IDENTITY_WRITE,
    }


def test_only_fastapi_docs_routes_are_not_api_routes(
    settings: Settings, database: Database
) -> None:
    """Routes outside the guard check are exactly the OpenAPI document, the docs page, and the
    console's static files."""
    app = create_app(settings, database)
    others = {route.path for route in app.routes if not isinstance(route, APIRoute)}
    assert others == {app.openapi_url, DOCS_PATH, STATIC_PATH}
    assert app.openapi_url == "/api/v1/openapi.json"


def test_public_routes_answer_without_a_token(api: Api) -> None:
    """/healthz, /readyz and /metrics answer 200 to an anonymous client."""
    with api.client() as anonymous:
        for path in sorted(PUBLIC_PATHS):
            assert anonymous.get(path).status_code == 200, path


def test_signed_routes_refuse_unsigned_requests(api: Api, settings: Settings) -> None:
    """Every Signed route answers 401 to a request without a signature (no token asked)."""
    app = create_app(settings, api.database)
    signed = [r for r in api_routes(app) if isinstance(route_guard(r), Signed)]
    assert signed
    with api.client() as anonymous:
        for route in signed:
            for method in sorted(route.methods or ()):
                response = _call(anonymous, method, _PATH_PARAM.sub("00000000-dummy", route.path))
                assert response.status_code == 401, (method, route.path, response.text)
                assert response.json()["error"]["code"] == "webhook_signature_invalid"


def test_every_guarded_route_is_401_without_a_token(api: Api, settings: Settings) -> None:
    """Every Require-guarded route answers 401 with WWW-Authenticate to an anonymous call;
    under /scim/v2 the 401 is a SCIM Error document."""
    app = create_app(settings, api.database)
    requests = _requests(app)
    scim_requests = _requests(app, "scim")
    assert requests
    assert scim_requests
    with api.client() as anonymous:
        for method, path, _ in requests:
            response = _call(anonymous, method, path)
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"]["code"] == "unauthenticated"
        for method, path, _ in scim_requests:
            response = _call(anonymous, method, path)
            assert "API token" in _scim_error(response, 401), (method, path)
            assert response.headers["www-authenticate"] == "Bearer"


def test_scim_routes_refuse_api_tokens_of_every_role(api: Api, settings: Settings) -> None:
    """An API token, even an admin's, is 403 on every /scim/v2 route, naming the scope."""
    requests = _requests(create_app(settings, api.database), "scim")
    clients = [api.as_role(role, f"api-{role}@example.com") for role in Role]
    try:
        for client in clients:
            for method, path, _ in requests:
                detail = _scim_error(_call(client, method, path), 403)
                assert "this token has scope 'api'" in detail, (method, path)
                assert "a token with scope 'scim'" in detail, (method, path)
    finally:
        for client in clients:
            client.close()


def test_api_routes_refuse_scim_tokens(api: Api, settings: Settings) -> None:
    """A SCIM token is 403 wrong_token_scope on every /api/v1 route, naming the scope."""
    requests = _requests(create_app(settings, api.database))
    with api.client(_scim_token(api)) as scim:
        for method, path, _ in requests:
            response = _call(scim, method, path)
            assert response.status_code == 403, (method, path, response.text)
            error = response.json()["error"]
            assert error["code"] == "wrong_token_scope", (method, path)
            assert "scope 'scim'" in error["message"]


def test_scim_token_passes_the_guard_of_every_scim_route(api: Api, settings: Settings) -> None:
    """A SCIM token gets past the guard of every /scim/v2 route (neither 401 nor 403)."""
    requests = _requests(create_app(settings, api.database), "scim")
    with api.client(_scim_token(api)) as scim:
        for method, path, _ in requests:
            response = _call(scim, method, path)
            assert response.status_code not in {401, 403}, (method, path, response.text)
            assert response.status_code < 500, (method, path, response.text)


def test_every_guarded_route_is_403_for_roles_lacking_its_permission(
    api: Api, settings: Settings
) -> None:
    """Every guarded route is 403 naming its permission for each role (or none) lacking it."""
    requests = _requests(create_app(settings, api.database))
    clients: dict[Role | None, httpx.Client] = {
        role: api.as_role(role, f"perm-{role}@example.com") for role in Role
    }
    clients[None] = api.client(api.user_token("no-roles@example.com"))
    try:
        for method, path, permission in requests:
            lacking = [
                role for role in clients if role is None or permission not in ROLE_PERMISSIONS[role]
            ]
            assert None in lacking
            for role in lacking:
                response = _call(clients[role], method, path)
                assert response.status_code == 403, (role, method, path, response.text)
                error = response.json()["error"]
                assert error["code"] == "permission_denied"
                assert error["missing_permission"] == str(permission), (role, method, path)
    finally:
        for client in clients.values():
            client.close()


def test_roles_holding_the_permission_pass_the_guard(api: Api, settings: Settings) -> None:
    """For each guarded route, a role that holds its permission is neither 401 nor 403."""
    requests = _requests(create_app(settings, api.database))
    clients = {role: api.as_role(role, f"holder-{role}@example.com") for role in Role}
    try:
        for method, path, permission in requests:
            holders = [role for role in Role if permission in ROLE_PERMISSIONS[role]]
            assert Role.ADMIN in holders
            for role in holders:
                response = _call(clients[role], method, path)
                assert response.status_code not in {401, 403}, (role, method, path, response.text)
    finally:
        for client in clients.values():
            client.close()


def test_bare_route_has_no_guard() -> None:
    """route_guard is None for a route with no guard and for one declaring two."""
    bare = APIRoute("/api/v1/bare", endpoint=lambda: {}, methods=["GET"])
    assert route_guard(bare) is None
    double = APIRoute(
        "/api/v1/double",
        endpoint=lambda: {},
        methods=["GET"],
        dependencies=[Depends(Public()), Depends(Require(Permission.AUDIT_READ))],
    )
    assert route_guard(double) is None


@pytest.mark.parametrize(
    "dependencies",
    [[], [Depends(Public()), Depends(Require(Permission.AUDIT_READ))]],
    ids=["no-guard", "two-guards"],
)
def test_app_with_an_unguarded_route_refuses_to_build(
    settings: Settings,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
    dependencies: list[object],
) -> None:
    """create_app raises RuntimeError naming a route that declares no single guard."""
    unguarded = APIRoute(
        "/api/v1/unguarded", endpoint=lambda: {}, methods=["GET"], dependencies=dependencies
    )
    monkeypatch.setattr(health.router, "routes", [*health.router.routes, unguarded])
    with pytest.raises(RuntimeError, match=r"deny by default.*\['GET'\] /api/v1/unguarded"):
        create_app(settings, database)
