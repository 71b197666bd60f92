"""Access in the console (Chromium): an operator grants then revokes access; a reviewer keeps
one item of an access review and revokes another; an admin deactivates a user, whose session
then stops working."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from playwright.sync_api import BrowserContext, Page, expect
from sqlalchemy import select

from grantflow.access.models import Grant, Identity
from grantflow.auth.models import User
from grantflow.governance.models import ReviewItem
from tests.browser.conftest import PASSWORD, Console
from tests.support.admin_objects import APP, seed
from tests.support.browser import screenshot, sign_in


def test_an_operator_grants_then_revokes_access(
    console: Console, signed_in_page: Callable[..., Page]
) -> None:
    """Grant access from the grants page: the grant page shows it active with its automation
    chip and the run it started; Revoke access with a comment: revoked, by whom and why."""
    seeded = seed(console.database, console.settings)
    page = signed_in_page("operator")
    page.goto("/grants")
    page.get_by_text("Grant access").click()
    page.get_by_label("Identity (e-mail, user name or id)").fill("ada@example.com")
    page.get_by_label("Application").select_option(label=APP)
    page.get_by_label("Role or entitlement (optional)").fill("auditor")
    page.get_by_label("Justification").fill("quarter-end audit")
    page.get_by_role("button", name="Grant", exact=True).click()
    page.wait_for_url("**/grants/*")
    expect(page.get_by_text("Access granted; 1 run started.")).to_be_visible()
    facts = page.locator(".facts")
    expect(facts).to_contain_text("quarter-end audit")
    expect(facts.locator(".chip").first).to_have_text("active")
    expect(page.locator("ul.runs li")).to_have_count(1)
    expect(page.locator("table.list").first).to_contain_text("Provision CRM")
    screenshot(page, "grant")
    grant_id = urlsplit(page.url).path.rsplit("/", 1)[1]

    page.get_by_label("Comment (why)").fill("audit finished")
    page.get_by_role("button", name="Revoke access").click()
    expect(page.get_by_text("Access revoked.")).to_be_visible()
    expect(facts.locator(".chip").first).to_have_text("revoked")
    expect(facts).to_contain_text("by operator@example.com (manual)")
    expect(page.get_by_role("button", name="Revoke access")).to_have_count(0)
    with console.database.transaction() as session:
        grant = session.get(Grant, grant_id)
        assert grant is not None
        identity = session.get(Identity, grant.identity_id)
        assert identity is not None
        assert (identity.id, grant.role, grant.status) == (seeded.identity_id, "auditor", "revoked")
        assert (grant.revoked_by, grant.revoke_comment) == (
            "operator@example.com",
            "audit finished",
        )


def test_a_reviewer_keeps_one_item_and_revokes_another(
    console: Console, signed_in_page: Callable[..., Page]
) -> None:
    """The assigned reviewer's queue lists both grants under review; Keep (with a comment)
    and Revoke each take effect: the decisions are recorded and the revoked grant is revoked."""
    page = signed_in_page("approver")
    seeded = seed(console.database, console.settings, reviewer="approver@example.com")
    page.goto("/reviews")
    ada = page.locator(f"#item-{seeded.item_id}")
    cy = page.locator(f"#item-{seeded.other_item_id}")
    expect(ada).to_contain_text("Ada Lovelace")
    expect(cy).to_contain_text("Cy Cipher")
    screenshot(page, "reviews-queue")
    ada.get_by_placeholder("Comment").fill("still on the CRM team")
    ada.get_by_role("button", name="Keep").click()
    expect(page.get_by_text("Ada Lovelace's access to Acme CRM is kept.")).to_be_visible()
    expect(page.locator(f"#item-{seeded.item_id}")).to_have_count(0)
    page.locator(f"#item-{seeded.other_item_id}").get_by_role("button", name="Revoke").click()
    expect(page.get_by_text("Cy Cipher's access to Acme CRM is revoked.")).to_be_visible()
    expect(page.get_by_text("Nothing waits on your review.")).to_be_visible()
    page.get_by_role("link", name="Quarterly CRM review").click()
    expect(page.locator("progress")).to_have_attribute("value", "100.0")
    with console.database.transaction() as session:
        kept = session.get(ReviewItem, seeded.item_id)
        revoked = session.get(ReviewItem, seeded.other_item_id)
        assert kept is not None
        assert revoked is not None
        assert (kept.decision, kept.comment, kept.decided_by) == (
            "keep",
            "still on the CRM team",
            "approver@example.com",
        )
        assert (revoked.decision, revoked.revoked) == ("revoke", True)
        grant = session.get(Grant, seeded.other_grant_id)
        assert grant is not None
        assert (grant.status, grant.revoke_reason) == ("revoked", "review")


def test_an_admin_deactivates_a_user(
    console: Console, signed_in_page: Callable[..., Page], new_context: Callable[[], BrowserContext]
) -> None:
    """An admin presses Deactivate on a user's row: the list shows them deactivated, the
    user is refused their next page (back to sign in), and Reactivate is offered."""
    dave = new_context().new_page()
    sign_in(dave, console.url, console.user("operator", "dave@example.com"), PASSWORD)
    page = signed_in_page("admin")
    page.goto("/users")
    row = page.locator("tr", has_text="dave@example.com")
    expect(row.locator(".chip")).to_have_text("active")
    screenshot(page, "users")
    row.get_by_role("button", name="Deactivate").click()
    expect(page.get_by_text("dave@example.com is deactivated")).to_be_visible()
    row = page.locator("tr", has_text="dave@example.com")
    expect(row.locator(".chip")).to_have_text("deactivated")
    expect(row.get_by_role("button", name="Reactivate")).to_be_visible()
    dave.goto("/grants")
    dave.wait_for_url("**/login?next=/grants")
    with console.database.transaction() as session:
        user = session.execute(select(User).where(User.email == "dave@example.com")).scalar_one()
        assert user.active is False


def test_my_token_is_shown_once_works_and_can_be_revoked(
    signed_in_page: Callable[..., Page],
) -> None:
    """Any user creates an API token on "my tokens": it is shown on that page only, works on
    the API as that user, is never shown again, and Revoke stops it at once."""
    page = signed_in_page("viewer")
    page.goto("/tokens")
    page.get_by_label("Name (what uses it)").fill("laptop script")
    page.get_by_role("button", name="Create").click()
    expect(page.locator(".token-once")).to_contain_text("shown only this once")
    raw = page.locator("#new-token").inner_text()
    assert len(raw) > 30
    me = page.request.get("/api/v1/me", headers={"Authorization": f"Bearer {raw}"})
    assert (me.status, me.json()["email"]) == (200, "viewer@example.com")
    screenshot(page, "tokens-created")
    page.goto("/tokens")
    expect(page.locator("tr", has_text="laptop script").locator(".chip")).to_have_text("active")
    assert raw not in page.content()
    page.locator("tr", has_text="laptop script").get_by_role("button", name="Revoke").click()
    expect(page.get_by_text("Token laptop script is revoked.")).to_be_visible()
    expect(page.locator("tr", has_text="laptop script").locator(".chip")).to_have_text("revoked")
    gone = page.request.get("/api/v1/me", headers={"Authorization": f"Bearer {raw}"})
    assert gone.status == 401
