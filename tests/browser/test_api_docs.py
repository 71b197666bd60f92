"""/api/v1/docs works offline: Swagger UI loads from Grantflow's own files, declares the bearer
scheme, and "Authorize" then "Try it out" calls the API with the token."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Role
from grantflow.auth.tokens import create_token
from grantflow.auth.users import find_user_by_email
from tests.browser.conftest import Console


def _token(console: Console) -> str:
    email = console.user(Role.VIEWER, "docs-viewer@example.com")
    with console.database.transaction() as session:
        user = find_user_by_email(session, email)
        assert user is not None
        _, raw = create_token(
            session, Actor.system("test"), user_id=user.id, name="docs", ttl_days=1
        )
    return raw


def test_openapi_declares_the_bearer_scheme(console: Console) -> None:
    """The OpenAPI document has an http bearer scheme, required by token routes (not by the
    probes), and lists no console page."""
    schema = httpx.get(f"{console.url}/api/v1/openapi.json", timeout=60).json()
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    assert schema["paths"]["/api/v1/runs"]["get"]["security"] == [{"bearerAuth": []}]
    assert "security" not in schema["paths"]["/healthz"]["get"]
    assert not any(path in schema["paths"] for path in ("/", "/login", "/account/sessions"))


def test_docs_authorize_and_try_it_out(page: Page, console: Console) -> None:
    """The docs page loads with no request leaving 127.0.0.1; Authorize with a token, then Try
    it out on GET /api/v1/runs answers 200."""
    token = _token(console)
    page.goto("/api/v1/docs")
    expect(page.get_by_role("heading", name="Grantflow")).to_be_visible()
    page.get_by_role("button", name="Authorize").first.click()
    page.get_by_label("auth-bearer-value").fill(token)
    page.get_by_role("button", name="Apply credentials").click()
    page.locator(".modal-ux").get_by_role("button", name="Close").click()
    page.get_by_placeholder("Filter by tag").fill("runs")  # 22 tags: runs is far down the page
    operation = page.locator("#operations-runs-list_runs_api_v1_runs_get")
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.get_by_role("button", name="Execute").click()
    expect(operation.locator(".live-responses-table tbody .response-col_status")).to_have_text(
        "200"
    )
