"""The console's administration pages keep the API's rules, over real HTTP (no browser): each
page and action declares the permission of the API route for the same thing; a viewer's forged
POST to any action is a 403 page, audited, changing nothing; and no role is ever shown a form
that posts to an action it may not take, while the roles that may take it do see it."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from grantflow.access.models import Grant
from grantflow.api import create_app
from grantflow.api.app import api_routes, route_guard
from grantflow.audit.models import AuditEntry
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import ROLE_PERMISSIONS, Permission, Role
from grantflow.auth.users import create_user
from grantflow.config import Settings
from grantflow.console.guard import Page
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.admin_objects import PAGES, Seeded, page_path, seed
from tests.support.console import signed_in_client

# the administration areas (the console's other pages are other modules' tests)
AREAS = re.compile(
    r"^/(workflows|identities|identity-imports|grants|connections|jobs|reviews|controls"
    r"|incidents|audit|users|tokens)(/|$)|^/runs/\{run_id\}/evidence"
)
_FORM = re.compile(r'<form method="post" action="([^"]+)"')


@pytest.fixture
def seeded(api: Api, settings: Settings) -> Seeded:
    return seed(api.database, settings)


def _routes(app: FastAPI) -> list[tuple[str, re.Pattern[str], Page]]:
    """(method, path pattern, guard) of every administration route."""
    found = []
    for route in api_routes(app):
        guard = route_guard(route)
        if isinstance(guard, Page) and AREAS.match(route.path):
            pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", route.path) + "$")
            for method in route.methods or ():
                found.append((method, pattern, guard))
    return found


def _guard_of(routes: list[tuple[str, re.Pattern[str], Page]], method: str, path: str) -> Page:
    path = path.split("?")[0].split("#")[0]
    matches = [g for m, p, g in routes if m == method and p.match(path)]
    assert matches, f"no console route for {method} {path}"
    return matches[0]


def _client(api: Api, settings: Settings, role: Role) -> tuple[httpx.Client, str]:
    email = f"admin-pages-{role}@example.com"
    with api.database.transaction() as session:
        create_user(session, Actor.system("test"), email=email, roles=[role])
    return signed_in_client(api.base_url, api.database, settings, email)


@pytest.fixture
def viewer(api: Api, settings: Settings) -> Iterator[tuple[httpx.Client, str]]:
    client, token = _client(api, settings, Role.VIEWER)
    with client:
        yield client, token


def test_every_administration_route_declares_the_api_permission(
    settings: Settings, api: Api
) -> None:
    """Each action of the administration pages declares the permission its API route does."""
    routes = _routes(create_app(settings, api.database))
    expected = {
        ("POST", "/workflows/x/enable"): Permission.WORKFLOW_PUBLISH,
        ("POST", "/workflows/x/versions/1/publish"): Permission.WORKFLOW_PUBLISH,
        ("POST", "/workflows/x/versions/1/activate"): Permission.WORKFLOW_PUBLISH,
        ("POST", "/workflows/x/versions/1/recompile"): Permission.WORKFLOW_PUBLISH,
        ("POST", "/workflows/x/versions/1/dry-run"): Permission.WORKFLOW_READ,
        ("POST", "/grants"): Permission.GRANT_WRITE,
        ("POST", "/grants/x/revoke"): Permission.GRANT_WRITE,
        ("POST", "/grants/x/extend"): Permission.GRANT_WRITE,
        ("POST", "/grants/x/dispatch"): Permission.GRANT_WRITE,
        ("POST", "/connections/x/test"): Permission.CONNECTION_WRITE,
        ("POST", "/connections/x/credential"): Permission.CREDENTIAL_WRITE,
        ("POST", "/jobs/x/run-now"): Permission.JOB_MANAGE,
        ("POST", "/jobs/x/pause"): Permission.JOB_MANAGE,
        ("POST", "/reviews/x/items/y/decide"): Permission.WORKFLOW_TASK,
        ("POST", "/reviews/x/close"): Permission.JOB_MANAGE,
        ("POST", "/reviews"): Permission.JOB_MANAGE,
        ("POST", "/controls/evaluate"): Permission.JOB_MANAGE,
        ("POST", "/incidents/x/resolve"): Permission.INCIDENT_MANAGE,
        ("POST", "/runs/x/evidence"): Permission.EVIDENCE_WRITE,
        ("GET", "/runs/x/evidence/y/content"): Permission.RUN_READ,
        ("GET", "/audit"): Permission.AUDIT_READ,
        ("POST", "/users/x/roles"): Permission.USER_ADMIN,
        ("POST", "/users/x/deactivate"): Permission.USER_ADMIN,
        ("POST", "/users"): Permission.USER_ADMIN,
        ("POST", "/users/x/invite"): Permission.USER_ADMIN,
        ("POST", "/workflows/x/runs"): Permission.RUN_OPERATE,
        ("POST", "/identities"): Permission.IDENTITY_WRITE,
        ("POST", "/identities/x"): Permission.IDENTITY_WRITE,
        ("POST", "/identities/x/leave"): Permission.IDENTITY_WRITE,
        ("GET", "/identity-imports"): Permission.IDENTITY_READ,
        ("GET", "/identity-imports/x"): Permission.IDENTITY_READ,
        ("POST", "/identity-imports"): Permission.IDENTITY_WRITE,
        ("POST", "/identity-imports/x/cancel"): Permission.IDENTITY_WRITE,
        ("POST", "/tokens"): Permission.SELF,
        ("POST", "/tokens/x/revoke"): Permission.SELF,
    }
    for (method, path), permission in expected.items():
        assert _guard_of(routes, method, path).permission == permission, (method, path)


def test_a_viewer_gets_403_on_every_action_it_lacks_and_it_is_audited(
    settings: Settings, api: Api, seeded: Seeded, viewer: tuple[httpx.Client, str]
) -> None:
    """Every administration POST a viewer lacks the permission for, sent with a valid CSRF
    token, is a 403 page naming the permission, audited as console.forbidden, and changes
    nothing (the grant stays active, no grant is added); revoking another user's token (self
    is held, the token is not the viewer's) is refused and audited the same way."""
    client, token = viewer
    app = create_app(settings, api.database)
    refused = 0
    for route in api_routes(app):
        guard = route_guard(route)
        if not (isinstance(guard, Page) and AREAS.match(route.path)) or "POST" not in (
            route.methods or ()
        ):
            continue
        path = page_path(route.path, seeded)
        response = client.post(path, data={"csrf_token": token}, follow_redirects=False)
        someone_elses = route.path == "/tokens/{token_id}/revoke"
        if guard.permission in ROLE_PERMISSIONS[Role.VIEWER] and not someone_elses:
            assert response.status_code != 403, path
            continue
        refused += 1
        assert response.status_code == 403, (path, response.text)
        if not someone_elses:
            assert f"needs the permission {guard.permission}" in response.text
        with api.database.transaction() as session:
            audited = session.execute(
                select(func.count())
                .select_from(AuditEntry)
                .where(
                    AuditEntry.action == "console.forbidden",
                    AuditEntry.actor == "admin-pages-viewer@example.com",
                    AuditEntry.target_id == path,
                )
            ).scalar_one()
        assert audited == 1, path
    assert refused >= 18
    with api.database.transaction() as session:
        grant = session.get(Grant, seeded.grant_id)
        assert grant is not None
        assert grant.status == "active"
        assert session.execute(select(func.count()).select_from(Grant)).scalar_one() == 3


@pytest.mark.parametrize("role", list(Role))
def test_no_role_sees_a_form_for_an_action_it_may_not_take(
    role: Role, settings: Settings, api: Api, seeded: Seeded
) -> None:
    """For each role, every administration page it may open answers 200 and every form on it
    posts to an action the role holds the permission for; a page it may not open is a 403."""
    routes = _routes(create_app(settings, api.database))
    held = ROLE_PERMISSIONS[role]
    client, _ = _client(api, settings, role)
    shown: set[str] = set()
    with client:
        for template in PAGES:
            path = page_path(template, seeded)
            response = client.get(path, follow_redirects=False)
            if _guard_of(routes, "GET", path).permission not in held:
                assert response.status_code == 403, path
                continue
            assert response.status_code == 200, (path, response.text[-2000:])
            for action in _FORM.findall(response.text):
                if action == "/logout":
                    continue
                guard = _guard_of(routes, "POST", action)
                assert guard.permission in held, (role, path, action)
                shown.add(re.sub(r"[0-9a-f-]{36}", "ID", action.split("#")[0]))
    if role == Role.VIEWER:  # a viewer's only forms: dry-run and its own tokens
        assert shown == {"/workflows/ID/versions/1/dry-run", "/tokens"}, shown
    if role == Role.ADMIN:  # and the admin is shown every action of these pages
        for action in (
            "/workflows/ID/disable",
            "/workflows/ID/versions/1/publish",
            "/grants",
            "/grants/ID/revoke",
            "/grants/ID/extend",
            "/grants/ID/dispatch",
            "/connections/ID/test",
            "/connections/ID/credential",
            "/jobs/ID/run-now",
            "/jobs/ID/pause",
            "/reviews/ID/close",
            "/reviews",
            "/controls/evaluate",
            "/incidents/ID/resolve",
            "/runs/ID/evidence",
            "/users/ID/roles",
            "/users/ID/deactivate",
            "/users",
            "/users/ID/invite",
            "/identities",
            "/identities/ID",
            "/identities/ID/leave",
            "/identity-imports",
            "/identity-imports/ID/cancel",
            "/tokens/ID/revoke",
            "/tokens",
        ):
            assert action in shown, action


def test_an_approver_named_as_reviewer_sees_keep_and_revoke(
    settings: Settings, api: Api, database: Database
) -> None:
    """The review item's assigned reviewer is shown Keep / Revoke on its queue; a viewer is
    shown the campaign without them."""
    client, _ = _client(api, settings, Role.APPROVER)
    seeded = seed(database, settings, reviewer="admin-pages-approver@example.com")
    with client:
        queue = client.get("/reviews")
        assert queue.status_code == 200
        assert f'action="/reviews/{seeded.review_id}/items/{seeded.item_id}/decide"' in queue.text
        assert 'value="keep"' in queue.text
        assert 'value="revoke"' in queue.text
    viewer, _ = _client(api, settings, Role.VIEWER)
    with viewer:
        page = viewer.get(f"/reviews/{seeded.review_id}")
        assert page.status_code == 200
        assert "/decide" not in page.text
        assert "Quarterly CRM review" in page.text
