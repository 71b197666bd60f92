"""Creating and changing things in the console (Chromium), each through the service function
of its API route: an operator adds an identity, changes its department (a mover) and offboards
it; an operator starts a run of a manual workflow with input, and a wrong input is refused in
words; an admin adds a user with roles and invites them; an operator starts an access review
whose items go to the named reviewer."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from grantflow.access.models import Identity
from grantflow.audit.models import AuditEntry
from grantflow.auth.models import User
from grantflow.engine.models import Run
from grantflow.errors import Conflict
from grantflow.governance import reviews
from grantflow.governance.models import AccessReview, ReviewItem
from grantflow.people.models import EmailMessage
from grantflow.queue.database import DatabaseQueue
from tests.browser.conftest import Console
from tests.support.admin_objects import APP, seed
from tests.support.browser import screenshot
from tests.support.engine import publish, wait_status, workflow
from tests.support.reviews import manager_campaign, people


def test_an_operator_adds_changes_and_offboards_an_identity(
    console: Console, signed_in_page: Callable[..., Page]
) -> None:
    page = signed_in_page("operator")
    page.goto("/identities")
    page.get_by_text("Add an identity").click()
    form = page.locator("#new-identity")
    form.get_by_label("E-mail", exact=True).fill("not an e-mail")
    form.get_by_label("Display name").fill("Grace Hopper")
    # the browser's own check would stop a malformed address: send it as a script would
    page.evaluate("document.querySelector('#new-identity form').noValidate = true")
    form.get_by_role("button", name="Add identity").click()
    expect(page.locator(".flash-error")).to_contain_text("email")
    with console.database.transaction() as session:
        assert session.execute(select(Identity)).first() is None

    page.get_by_text("Add an identity").click()
    form.get_by_label("E-mail", exact=True).fill("grace@example.com")
    form.get_by_label("Display name").fill("Grace Hopper")
    form.get_by_label("Department").fill("Research")
    form.get_by_role("button", name="Add identity").click()
    page.wait_for_url("**/identities/*")
    expect(page.get_by_text("Grace Hopper added. identity_joined: 0 runs started")).to_be_visible()
    identity_id = urlsplit(page.url).path.rsplit("/", 1)[1]

    page.get_by_text("Change", exact=True).click()
    page.locator("#change-identity").get_by_label("Department").fill("Navy")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_text("Changed department. identity_moved: 0 runs started")).to_be_visible()
    expect(page.locator(".facts")).to_contain_text("Navy")
    screenshot(page, "identity-change")

    page.get_by_role("button", name="Offboard now").click()
    expect(page.get_by_text("Offboarded. identity_left: 0 runs started")).to_be_visible()
    expect(page.get_by_role("button", name="Offboard now")).to_have_count(0)
    with console.database.transaction() as session:
        grace = session.get(Identity, identity_id)
        assert grace is not None
        assert (grace.email, grace.department, grace.active) == ("grace@example.com", "Navy", False)
        actions = session.execute(
            select(AuditEntry.action).where(AuditEntry.target_id == identity_id)
        ).scalars()
        assert {"identity.created", "identity.updated"} <= set(actions)


def test_an_operator_starts_a_run_with_input(
    console: Console, signed_in_page: Callable[..., Page]
) -> None:
    step = {"id": "greet", "type": "set", "config": {"values": {"hi": "{{ input.name }}"}}}
    document = workflow("Hello", step)
    document["trigger"]["input_schema"] = {
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "required": ["name"],
    }
    workflow_id = publish(console.database, document)
    page = signed_in_page("operator")
    page.goto(f"/workflows/{workflow_id}")
    page.get_by_text("Start a run").click()
    box = page.get_by_label("Input (JSON, checked against the trigger's input schema)")
    box.fill('{"name": ')
    page.get_by_role("button", name="Start run").click()
    expect(page.locator(".flash-error")).to_contain_text("Input: not valid JSON")
    page.get_by_text("Start a run").click()
    box.fill("{}")
    page.get_by_role("button", name="Start run").click()
    expect(page.locator(".flash-error")).to_contain_text("name")
    with console.database.transaction() as session:
        assert session.execute(select(Run)).first() is None

    page.get_by_text("Start a run").click()
    box.fill('{"name": "Ada"}')
    page.get_by_role("button", name="Start run").click()
    page.wait_for_url("**/runs/*")
    expect(page.locator(".flash").first).to_contain_text("started.")
    run_id = urlsplit(page.url).path.rsplit("/", 1)[1]
    with console.database.transaction() as session:
        run = session.get(Run, run_id)
        assert run is not None
        assert (run.input, run.created_by) == ({"name": "Ada"}, "operator@example.com")
    assert wait_status(console.database, run_id, "queued", "running", "succeeded")


def test_an_admin_adds_a_user_and_invites_them(
    console: Console, signed_in_page: Callable[..., Page]
) -> None:
    page = signed_in_page("admin")
    page.goto("/users")
    page.get_by_text("Add a user").click()
    form = page.locator("#new-user")
    form.get_by_label("E-mail", exact=True).fill("ann@example.com")
    form.get_by_label("Display name").fill("Ann Approver")
    form.get_by_label("viewer").uncheck()
    form.get_by_role("button", name="Add user").click()
    expect(page.locator(".flash-error")).to_contain_text("Roles: tick at least one role")

    page.get_by_text("Add a user").click()
    form.get_by_label("E-mail", exact=True).fill("ann@example.com")
    form.get_by_label("approver").check()
    form.get_by_role("button", name="Add user").click()
    page.wait_for_url("**/users/*")
    # e-mail is off in the tests' settings: the console says so and how to hand a link over
    expect(
        page.get_by_text("ann@example.com added with the roles: approver, viewer.")
    ).to_be_visible()
    expect(page.get_by_text("E-mail is off (GRANTFLOW_SMTP_HOST is not set)")).to_be_visible()
    page.get_by_role("button", name="E-mail an invitation").click()
    expect(page.get_by_text("no invitation went to ann@example.com")).to_be_visible()
    with console.database.transaction() as session:
        ann = session.execute(select(User).where(User.email == "ann@example.com")).scalar_one()
        assert sorted(ann.roles) == ["approver", "viewer"]
        invited = session.execute(
            select(AuditEntry.actor).where(
                AuditEntry.action == "user.invited", AuditEntry.target_id == ann.id
            )
        ).scalars()
        assert list(invited) == ["admin@example.com", "admin@example.com"]
        mails = session.execute(
            select(EmailMessage.status).where(EmailMessage.to_user_id == ann.id)
        ).scalars()
        assert set(mails) == {"skipped"}


def test_closing_a_large_campaign_shows_its_revocations_until_the_workers_are_done(
    console: Console, signed_in_page: Callable[..., Page], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A default of revoke over more grants than a batch: the close revokes one batch, the page
    says the campaign is closing and how many grants are left, and the workers' timer ends it."""
    monkeypatch.setattr(reviews, "REVOKE_BATCH", 3)
    people(console.database, "Wiki", 7)
    review_id = manager_campaign(console.database, "Wiki", default_decision="revoke")
    page = signed_in_page("operator")
    page.goto(f"/reviews/{review_id}")
    page.get_by_role("button", name="Close now").click()
    expect(page.locator(".flash").first).to_contain_text("Access review Wiki review is closing")
    expect(page.locator(".banner.warn")).to_contain_text("4 still to revoke")
    expect(page.get_by_role("button", name="Close now")).to_have_count(0)
    expect(page.locator(".facts .chip").first).to_have_text("closing")
    queue = DatabaseQueue(console.database)
    while True:  # the workers' timer, a batch per transaction
        with console.database.transaction() as session:
            if not reviews.close_due(session, queue):
                break
    queue.close()
    page.reload()
    expect(page.locator(".banner.warn")).to_have_count(0)
    expect(page.locator(".facts .chip").first).to_have_text("closed")


def test_a_campaign_whose_revocations_fail_says_why_on_its_page(
    console: Console, signed_in_page: Callable[..., Page], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: object, **__: object) -> bool:
        raise Conflict("the revocation could not be recorded: the grant changed meanwhile")

    monkeypatch.setattr(reviews, "revoke_item", refuse)
    people(console.database, "Wiki", 2)
    review_id = manager_campaign(console.database, "Wiki", default_decision="revoke")
    page = signed_in_page("operator")
    page.goto(f"/reviews/{review_id}")
    page.get_by_role("button", name="Close now").click()
    expect(page.locator(".flash").first).to_contain_text("is closing")
    banner = page.locator(".banner.bad")
    expect(banner).to_contain_text(
        "Revoking stopped: the revocation could not be recorded: the grant changed meanwhile"
    )
    expect(banner).to_contain_text("no grant of that batch was revoked; the workers try again")
    expect(page.locator(".banner.warn")).to_contain_text("2 still to revoke")


def test_an_operator_starts_an_access_review(
    console: Console, signed_in_page: Callable[..., Page]
) -> None:
    seed(console.database, console.settings)
    reviewer = console.user("approver", "rita@example.com")
    page = signed_in_page("operator")
    page.goto("/reviews")
    page.get_by_text("Start an access review").click()
    form = page.locator("#start-review")
    form.get_by_label("Name").fill("CRM Q3")
    form.get_by_label("Applications (none chosen: every application)").select_option(label=APP)
    form.locator("select[name=reviewer]").select_option("users")
    form.get_by_label("Duration (e.g. 14d)").fill("forever")
    form.get_by_role("button", name="Start the review").click()
    expect(page.locator(".flash-error")).to_contain_text("duration")
    with console.database.transaction() as session:
        assert (
            session.execute(select(AccessReview).where(AccessReview.name == "CRM Q3")).first()
            is None
        )

    page.get_by_text("Start an access review").click()
    form.get_by_label("Name").fill("CRM Q3")
    form.get_by_label("Applications (none chosen: every application)").select_option(label=APP)
    form.locator("select[name=reviewer]").select_option("users")
    form.get_by_label("Reviewers by e-mail (reviewer: users; one per line)").fill(reviewer)
    form.get_by_label("Duration (e.g. 14d)").fill("7d")
    form.get_by_role("button", name="Start the review").click()
    page.wait_for_url("**/reviews/*")
    expect(page.locator(".flash").first).to_contain_text("Access review CRM Q3 started: 2 items.")
    with console.database.transaction() as session:
        review = session.execute(
            select(AccessReview).where(AccessReview.name == "CRM Q3")
        ).scalar_one()
        assert review.created_by == "operator@example.com"
        items = (
            session.execute(select(ReviewItem).where(ReviewItem.review_id == review.id))
            .scalars()
            .all()
        )
        assert len(items) == 2
        assert all(i.reviewer_source == "named" for i in items)
