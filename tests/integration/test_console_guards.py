"""Console pages are deny-by-default like the API: each declares one page guard; a session
cookie (never a bearer token) authorises them; a missing permission is a 403 page, and a
forged POST for it is audited."""

from __future__ import annotations

import re

from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import select

from grantflow.api import create_app
from grantflow.api.app import api_routes, route_guard
from grantflow.audit.models import AuditEntry
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import ROLE_PERMISSIONS, Role
from grantflow.auth.users import create_user
from grantflow.config import Settings
from grantflow.console.guard import Page, PublicPage
from tests.conftest import Api
from tests.support.console import signed_in_client

_PATH_PARAM = re.compile(r"\{[^}]+\}")
# the pages anyone may open: signing in, and what leads to it
PUBLIC_PAGES = {"/login"}


def _pages(app: FastAPI) -> list[tuple[str, str, Page]]:
    """(method, concrete path, guard) of every console route guarded by Page."""
    found = []
    for route in api_routes(app):
        guard = route_guard(route)
        if isinstance(guard, Page):
            for method in sorted(route.methods or ()):
                found.append((method, _PATH_PARAM.sub("00000000-dummy", route.path), guard))
    return found


def _user(api: Api, email: str, *roles: Role) -> None:
    with api.database.transaction() as session:
        create_user(session, Actor.system("test"), email=email, roles=list(roles))


def test_console_routes_declare_a_page_guard(settings: Settings, api: Api) -> None:
    """Every console route has Page or PublicPage; PublicPage only on the sign-in pages;
    none of them is in the OpenAPI document."""
    app = create_app(settings, api.database)
    console = [r for r in api_routes(app) if isinstance(route_guard(r), Page | PublicPage)]
    assert {"/", "/login", "/logout", "/account/sessions"} <= {r.path for r in console}
    public = {r.path for r in console if isinstance(route_guard(r), PublicPage)}
    assert public <= PUBLIC_PAGES | {p for p in public if p.startswith(("/login", "/password"))}
    assert "/login" in public
    schema_paths = set(app.openapi()["paths"])
    assert not any(isinstance(r, APIRoute) and r.path in schema_paths for r in console)


def test_signed_out_pages_redirect_to_sign_in_even_with_a_bearer_token(
    settings: Settings, api: Api
) -> None:
    """Every Page route, signed out, redirects to /login (GET: with next=<page>), also when the
    request carries an admin's API token: bearer tokens never authorise console pages."""
    token = api.user_token("bearer-admin@example.com", Role.ADMIN)
    pages = _pages(create_app(settings, api.database))
    with api.client(token) as client:
        for method, path, _ in pages:
            response = client.request(method, path, follow_redirects=False)
            assert response.status_code == 303, (method, path, response.text)
            location = response.headers["location"]
            if method == "GET" and path != "/":
                assert location == f"/login?next={path}", (method, path)
            else:
                assert location.startswith("/login"), (method, path)


def test_missing_permission_is_a_403_page_and_a_forged_post_is_audited(
    settings: Settings, api: Api
) -> None:
    """For each Page route and each role lacking its permission (and a user without roles), a
    GET is a 403 HTML page naming the permission; a POST with a valid CSRF token is 403 too,
    changes nothing, and leaves a console.forbidden audit entry."""
    pages = _pages(create_app(settings, api.database))
    roles: list[Role | None] = [*Role, None]
    for role in roles:
        email = f"page-{role or 'none'}@example.com"
        _user(api, email, *([role] if role else []))
        client, token = signed_in_client(api.base_url, api.database, settings, email)
        with client:
            for method, path, guard in pages:
                if role is not None and guard.permission in ROLE_PERMISSIONS[role]:
                    continue
                data = {"csrf_token": token} if method == "POST" else None
                response = client.request(method, path, data=data, follow_redirects=False)
                assert response.status_code == 403, (role, method, path, response.text)
                assert response.headers["content-type"].startswith("text/html")
                assert f"needs the permission {guard.permission}" in response.text
                if method == "POST":
                    with api.database.transaction() as session:
                        entry = session.execute(
                            select(AuditEntry)
                            .where(AuditEntry.action == "console.forbidden")
                            .where(AuditEntry.actor == email, AuditEntry.target_id == path)
                        ).scalar_one()
                        assert entry.summary["method"] == "POST"


def test_a_cookie_never_authorises_the_api(settings: Settings, api: Api) -> None:
    """An admin's console session cookie gets 401 from /api/v1 and /scim/v2 routes."""
    _user(api, "cookie-admin@example.com", Role.ADMIN)
    client, token = signed_in_client(
        api.base_url, api.database, settings, "cookie-admin@example.com"
    )
    with client:
        assert client.get("/").status_code == 200
        for path in ("/api/v1/runs", "/api/v1/users", "/api/v1/audit", "/scim/v2/Users"):
            response = client.get(path, headers={"X-CSRF-Token": token})
            assert response.status_code == 401, path


def test_no_role_user_is_refused_the_home_page(settings: Settings, api: Api) -> None:
    """A signed-in user without any role sees a 403 page in words, not a stack trace."""
    _user(api, "nobody@example.com")
    client, _ = signed_in_client(api.base_url, api.database, settings, "nobody@example.com")
    with client:
        response = client.get("/")
    assert response.status_code == 403
    assert "This action needs the permission self." in response.text
    assert "Traceback" not in response.text
    assert "Next: ask an admin for a role that includes self" in response.text
