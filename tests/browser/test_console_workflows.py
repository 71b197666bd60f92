"""Workflows in the console (Chromium): a publish refused by the gate lists every problem, each
next to the step and field it names in the document; a clean draft publishes and goes live."""

from __future__ import annotations

import re
from collections.abc import Callable

from playwright.sync_api import Page, expect

from grantflow.auth.actor import Actor
from grantflow.definitions import workflows
from grantflow.definitions.models import Workflow
from tests.browser.conftest import Console
from tests.support.admin_objects import provisioning_document, seed
from tests.support.browser import PageWatch, screenshot


def test_a_publish_with_errors_lists_every_gate_error_next_to_its_step_and_field(
    console: Console, signed_in_page: Callable[..., Page], page_watch: PageWatch
) -> None:
    """An editor presses Publish on a draft the gate refuses: the page (422) says how many
    problems block it, lists each with its step and field, and shows each under the line of
    the document it names; the version stays a draft."""
    page_watch.allow("status of 422")  # the refused publish answers 422 Unprocessable
    seeded = seed(console.database, console.settings)
    with console.database.transaction() as session:
        expected = [
            p.to_dict() for p in workflows.validate(session, seeded.broken_workflow_id, 1).errors
        ]
    assert len(expected) >= 5
    page = signed_in_page("editor")
    page.goto(f"/workflows/{seeded.broken_workflow_id}/versions/1")
    page.get_by_role("button", name="Publish", exact=True).click()
    expect(page.locator(".error-box")).to_contain_text("cannot be published")
    expect(page.locator(".gate-summary")).to_have_text(
        f"{len(expected)} problems block publishing. Each is listed here and under the line "
        "of the document it names."
    )
    rows = page.locator("tr.gate-error")
    expect(rows).to_have_count(len(expected))
    for index, problem in enumerate(expected):
        row = rows.nth(index)
        expect(row.locator("td").nth(0)).to_have_text(problem["step"])
        expect(row.locator("td").nth(1)).to_have_text(problem["field"])
        words = re.compile(re.escape(problem["message"].rstrip(".")), re.IGNORECASE)
        expect(row.locator("td").nth(2)).to_contain_text(words)
        line = page.locator(f'.yl[data-path="{problem["field"]}"]')
        if not line.count():  # a whole step: its first line, `- id: …`
            line = page.locator(f"#step-{problem['step']}")
        note = line.locator("xpath=following-sibling::span[contains(@class,'y-note')]").filter(
            has_text=problem["message"]
        )
        expect(note.first).to_be_visible()
        expect(line).to_have_class("yl y-problem")
    screenshot(page, "workflow-publish-refused")
    with console.database.transaction() as session:
        workflow = session.get(Workflow, seeded.broken_workflow_id)
        assert workflow is not None
        assert (workflow.active_version, workflow.versions[0].state) == (None, "draft")


def test_a_clean_draft_publishes_and_the_workflow_goes_live(
    console: Console, signed_in_page: Callable[..., Page]
) -> None:
    """A draft the gate accepts shows "no problem"; Publish makes it the active version and
    the workflow list says it is dispatching."""
    seed(console.database, console.settings)
    with console.database.transaction() as session:
        draft = workflows.create_workflow(
            session, Actor.system("test"), provisioning_document("Provision wiki")
        )
        workflow_id = draft.workflow.id
    page = signed_in_page("editor")
    page.goto(f"/workflows/{workflow_id}")
    expect(page.get_by_text("Not dispatching")).to_be_visible()
    page.get_by_role("link", name="v1").click()
    expect(page.locator(".gate-summary")).to_contain_text("no problem")
    page.get_by_role("button", name="Publish", exact=True).click()
    expect(page.get_by_text("Version 1 of Provision wiki is published")).to_be_visible()
    page.goto("/workflows?name=wiki")
    row = page.locator("tr", has_text="Provision wiki")
    expect(row.locator(".chip", has_text="dispatching")).to_have_text("dispatching")
    with console.database.transaction() as session:
        workflow = session.get(Workflow, workflow_id)
        assert workflow is not None
        assert workflow.active_version == 1


def test_a_dry_run_previews_the_exact_request_and_sends_nothing(
    console: Console, signed_in_page: Callable[..., Page], page_watch: PageWatch
) -> None:
    """A viewer fills the sample form on a published version: the preview shows the step's
    exact request (method, URL, the body rendered from the sample identity), the path taken,
    and says nothing was sent; a sample that is not JSON is refused naming its field."""
    seeded = seed(console.database, console.settings)
    page = signed_in_page("viewer")
    page.goto(f"/workflows/{seeded.workflow_id}/versions/1")
    page.get_by_label("Identity (JSON)").fill('{"email": "grace@example.com"}')
    page.get_by_role("button", name="Preview the requests").click()
    result = page.get_by_label("Dry-run result")
    expect(result).to_contain_text("nothing sent")
    expect(result.locator("article pre")).to_contain_text('"url": "<connection crm>/users"')
    expect(result.locator("article pre")).to_contain_text('"email": "grace@example.com"')
    expect(result.locator("article pre")).to_contain_text('"method": "POST"')
    screenshot(page, "workflow-dry-run")

    page_watch.allow("status of 422")  # the refused sample answers 422 Unprocessable
    page.get_by_label("Input (JSON)").fill("{not json")
    page.get_by_role("button", name="Preview the requests").click()
    expect(page.locator(".error-box")).to_contain_text("sample.input: not valid JSON")
    expect(page.get_by_label("Input (JSON)")).to_have_value("{not json")
