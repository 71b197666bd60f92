"""Every administration page in Chromium: each renders for an admin with no console error and
no request leaving 127.0.0.1 (the watch on every browser context fails the test otherwise),
each main page's screenshot is kept under docs/screenshots/, and filters update the table in
place through htmx while the address bar follows."""

from __future__ import annotations

import re
from collections.abc import Callable

from playwright.sync_api import Page, expect

from tests.browser.conftest import Console
from tests.support.admin_objects import PAGES, page_path, seed
from tests.support.browser import screenshot

# the page each kept screenshot shows
SCREENSHOTS = {
    "workflows": "/workflows",
    "workflow": "/workflows/{workflow_id}",
    "workflow-version": "/workflows/{workflow_id}/versions/1",
    "identities": "/identities",
    "identity": "/identities/{identity_id}",
    "grants": "/grants",
    "connections": "/connections",
    "connection": "/connections/{connection_id}",
    "jobs": "/jobs",
    "reviews": "/reviews",
    "review": "/reviews/{review_id}",
    "controls": "/controls",
    "incidents": "/incidents",
    "audit": "/audit",
    "audit-verify": "/audit/verify",
    "user": "/users/{user_id}",
    "tokens": "/tokens",
}


def test_every_administration_page_renders_cleanly(
    console: Console, signed_in_page: Callable[..., Page]
) -> None:
    """An admin opens every administration page: each answers 200 with its heading and no
    error box, with no console error and nothing fetched from outside 127.0.0.1."""
    seeded = seed(console.database, console.settings)
    page = signed_in_page("admin")
    kept = {page_path(path, seeded): name for name, path in SCREENSHOTS.items()}
    for template in PAGES:
        path = page_path(template, seeded)
        response = page.goto(path)
        assert response is not None
        assert response.status == 200, path
        expect(page.locator("h1")).not_to_be_empty()
        expect(page.locator(".error-box")).to_have_count(0)
        expect(page.locator("link[rel=stylesheet]")).to_have_attribute(
            "href", "/static/console.css"
        )
        if path in kept:
            screenshot(page, kept[path])
    assert set(kept.values()) == set(SCREENSHOTS)


def test_a_filter_updates_the_table_in_place(
    console: Console, signed_in_page: Callable[..., Page]
) -> None:
    """Choosing "revoked" on the grants page swaps only the table (htmx) and pushes the
    filtered address; the page itself is not reloaded."""
    seed(console.database, console.settings)
    page = signed_in_page("viewer")
    page.goto("/grants")
    page.evaluate("document.body.dataset.loaded = 'first'")  # gone if the page reloads
    rows = page.locator("#table tbody tr")
    expect(rows).to_have_count(3)
    page.get_by_label("Status").select_option("revoked")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".chip").first).to_have_text("revoked")
    page.wait_for_url(re.compile(r"/grants\?status=revoked"))
    assert page.evaluate("document.body.dataset.loaded") == "first"
