"""Deny by default: every route declares one guard, and every guarded route refuses over HTTP."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute

from grantflow.api import create_app
from grantflow.api.app import api_routes, route_guard
from grantflow.api.routes import health
from grantflow.api.security import Public, Require
from grantflow.auth.permissions import ROLE_PERMISSIONS, Permission, Role
from grantflow.config import Settings
from grantflow.store.database import Database
from tests.conftest import Api

PUBLIC_PATHS = {"/healthz", "/readyz", "/metrics"}
_PATH_PARAM = re.compile(r"\{[^}]+\}")


def _guarded(app: FastAPI) -> list[tuple[APIRoute, Require]]:
    routes = []
    for route in api_routes(app):
        guard = route_guard(route)
        if isinstance(guard, Require):
            routes.append((route, guard))
    return routes


def _requests(app: FastAPI) -> list[tuple[str, str, Permission]]:
    """(method, concrete path, permission) for every method of every guarded route."""
    return [
        (method, _PATH_PARAM.sub("00000000-dummy", route.path), guard.permission)
        for route, guard in _guarded(app)
        for method in sorted(route.methods or ())
    ]


def _call(client: httpx.Client, method: str, path: str) -> httpx.Response:
    body = {} if method in {"POST", "PUT", "PATCH"} else None
    return client.request(method, path, json=body)


def test_every_route_declares_exactly_one_guard(settings: Settings, database: Database) -> None:
    """Each APIRoute has a Require or Public guard; only the probes and metrics are Public."""
    app = create_app(settings, database)
    routes = api_routes(app)
    guards = {route.path + str(sorted(route.methods or ())): route_guard(route) for route in routes}
    assert all(isinstance(g, Require | Public) for g in guards.values()), guards
    public = {route.path for route in routes if isinstance(route_guard(route), Public)}
    assert public == PUBLIC_PATHS
    assert len(_guarded(app)) == len(routes) - len(PUBLIC_PATHS)
    assert {r.path for r in routes if r.path.startswith("/api/v1/")} == {
        r.path for r, _ in _guarded(app)
    }


def test_only_fastapi_docs_routes_are_not_api_routes(
    settings: Settings, database: Database
) -> None:
    """Routes outside the guard check are exactly FastAPI's OpenAPI document and docs pages."""
    app = create_app(settings, database)
    others = {route.path for route in app.routes if not isinstance(route, APIRoute)}
    assert others == {app.openapi_url, app.docs_url, app.swagger_ui_oauth2_redirect_url}
    assert app.openapi_url == "/api/v1/openapi.json"


def test_public_routes_answer_without_a_token(api: Api) -> None:
    """/healthz, /readyz and /metrics answer 200 to an anonymous client."""
    with api.client() as anonymous:
        for path in sorted(PUBLIC_PATHS):
            assert anonymous.get(path).status_code == 200, path


def test_every_guarded_route_is_401_without_a_token(api: Api, settings: Settings) -> None:
    """Every Require-guarded route answers 401 with WWW-Authenticate to an anonymous call."""
    requests = _requests(create_app(settings, api.database))
    assert requests
    with api.client() as anonymous:
        for method, path, _ in requests:
            response = _call(anonymous, method, path)
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"]["code"] == "unauthenticated"


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
