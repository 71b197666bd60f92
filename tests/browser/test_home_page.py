"""The home page in Chromium: what needs attention — the approval waiting on me, the failed
run, the unhealthy connection, the overdue job, the open incident, the failing control — each
a link to its object; and every page of the inbox and runs renders without a console error or
a request leaving 127.0.0.1 (the page watch of every browser test)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Console
from tests.support.engine import running_worker
from tests.support.ops import attention_world
from tests.support.screenshots import keep
from tests.support.target import Target, running_target


@pytest.fixture
def target() -> Iterator[Target]:
    with running_target() as running:
        yield running


def test_home_lists_what_needs_attention_each_a_link_to_its_object(
    signed_in_page: Callable[..., Page], console: Console, target: Target
) -> None:
    """An admin's home page has one section per kind of trouble, each item linking to its
    object's page; the inbox and run links open their pages, which render cleanly."""
    with running_worker(console.database):
        world = attention_world(console.database, target)
    page = signed_in_page("admin")
    expect(page.get_by_role("heading", name="Needs attention")).to_be_visible()
    sections = {
        "waiting": f"/inbox/{world.task}",
        "failed": f"/runs/{world.failed_run}",
        "connections": f"/connections/{world.connection}",
        "jobs": f"/jobs/{world.job}",
        "incidents": f"/incidents/{world.incident}",
        "controls": "/controls",
    }
    for key, href in sections.items():
        section = page.locator(f"#attention-{key}")
        expect(section.locator(f'a[href="{href}"]')).to_be_visible()
    expect(page.locator("#attention-connections")).to_contain_text("health check: HTTP 500")
    expect(page.locator("#attention-controls")).to_contain_text("1 finding")
    expect(page.locator("#attention-stuck")).to_contain_text("No run is stuck.")
    keep(page, "home")

    page.locator("#attention-waiting a").first.click()
    expect(page.get_by_role("heading", name="Approval")).to_be_visible()
    expect(page.get_by_role("button", name="Approve")).to_be_visible()
    page.goto("/")
    page.locator(f'#attention-failed a[href="/runs/{world.failed_run}"]').click()
    expect(page.locator("#run-status")).to_have_text("failed")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Runs").click()
    expect(page.locator("table.runs tbody tr")).to_have_count(2)
    page.goto("/inbox")
    expect(page.locator("article.task")).to_have_count(1)
