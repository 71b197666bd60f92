"""CSV imports of identities in the console (Chromium): an admin sends a file from the identities
page and follows its import to the end on a page that reloads itself; a file refused as a whole
is shown on the identities page and nothing is stored; an auditor reads imports but is offered
neither the form nor Cancel, and is refused both; Cancel stops an import whose last batch
failed."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import FilePayload, Page, expect
from sqlalchemy import func, select

from grantflow.access import identity_import, identity_imports
from grantflow.access.models import Identity, IdentityImport
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.queue.database import DatabaseQueue
from grantflow.store.base import utcnow
from grantflow.store.database import Database
from tests.browser.conftest import Console
from tests.support.browser import PageWatch, screenshot

LIMIT = 4096  # the servers' GRANTFLOW_EVIDENCE_MAX_BYTES here: a file can be too large cheaply

# row 3 is bad (no e-mail address); the others are new people
PEOPLE = (
    "email,display_name,department\n"
    "ada@example.com,Ada Lovelace,Research\n"
    "not-an-email,Nobody,\n"
    "grace@example.com,Grace Hopper,Navy\n"
)


@pytest.fixture
def console_overrides() -> dict[str, Any]:
    return {"evidence_max_bytes": LIMIT}


def csv_file(text: str, name: str = "people.csv") -> FilePayload:
    return {"name": name, "mimeType": "text/csv", "buffer": text.encode()}


def send_from_identities_page(page: Page, text: str, name: str = "people.csv") -> None:
    page.goto("/identities")
    page.get_by_text("Import a CSV file").click()
    form = page.locator("#import-identities")
    form.get_by_label("CSV file").set_input_files(csv_file(text, name))
    form.get_by_role("button", name="Import", exact=True).click()


def work_through(database: Database) -> None:
    """The workers' timer until no import is left to write (a batch per transaction)."""
    queue = DatabaseQueue(database)
    try:
        while True:
            with database.transaction() as session:
                if not identity_imports.import_due(session, queue):
                    return
    finally:
        queue.close()


def imports(database: Database) -> list[IdentityImport]:
    with database.transaction() as session:
        found = list(session.execute(select(IdentityImport)).scalars())
        session.expunge_all()
        return found


def queued(database: Database, text: str = PEOPLE) -> str:
    """An import sent by an admin over the API, not yet taken by a worker: its id."""
    admin = Actor(label="admin@example.com", permissions=frozenset({Permission.IDENTITY_WRITE}))
    with database.transaction() as session:
        return identity_imports.start(session, admin, text.encode(), filename="people.csv").id


def status_chip(page: Page) -> Any:
    return page.locator(".import-progress .facts .chip").first


def test_an_admin_imports_a_csv_file_and_follows_it_to_the_end(
    console: Console, signed_in_page: Callable[..., Page]
) -> None:
    """Sent from the identities page: on to the import's page, queued and saying it refreshes
    itself; once a worker wrote it the page shows succeeded by itself, the counts, the rejected
    row with its reason; the outcome filter shows the rejected row alone; the list has it."""
    page = signed_in_page("admin")
    send_from_identities_page(page, PEOPLE)
    page.wait_for_url("**/identity-imports/*")
    expect(page.locator(".flash-success")).to_contain_text(
        "people.csv is accepted: 3 rows to import."
    )
    expect(status_chip(page)).to_have_text("queued")
    expect(page.locator("meta[http-equiv=refresh]")).to_have_count(1)
    expect(page.locator(".live-note")).to_contain_text("refreshes itself every 3 seconds")
    expect(page.get_by_role("button", name="Cancel import")).to_be_visible()

    work_through(console.database)
    expect(status_chip(page)).to_have_text("succeeded")  # the page reloaded by itself
    expect(page.locator("meta[http-equiv=refresh]")).to_have_count(0)
    expect(page.locator(".live-note")).to_have_count(0)
    expect(page.get_by_role("button", name="Cancel import")).to_have_count(0)
    expect(page.locator(".progress-line")).to_contain_text(
        "3 of 3 rows (100%) — 2 created, 0 updated, 0 unchanged, 1 rejected"
    )
    expect(page.locator("table.import-rows tbody tr")).to_have_count(3)
    rejected = page.locator("#row-3")
    expect(rejected).to_contain_text("not-an-email")
    expect(rejected.locator(".chip")).to_have_text("rejected")
    expect(rejected.locator(".failure-message")).to_contain_text(re.compile(r"^email: "))
    expect(page.locator("#row-2")).to_contain_text("identity_joined")

    screenshot(page, "identity-import")

    page.get_by_label("Outcome").select_option("rejected")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"\?outcome=rejected$"))
    expect(page.locator("table.import-rows tbody tr")).to_have_count(1)
    expect(page.locator("table.import-rows tbody tr")).to_contain_text("not-an-email")

    page.goto("/identities")
    page.get_by_role("link", name="CSV imports").click()
    page.wait_for_url("**/identity-imports")
    row = page.locator("table.list tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("people.csv")
    expect(row.locator(".chip")).to_have_text("succeeded")
    expect(row).to_contain_text("3 of 3 rows (100%)")
    with console.database.transaction() as session:
        names = set(session.execute(select(Identity.display_name)).scalars())
    assert names == {"Ada Lovelace", "Grace Hopper"}


def test_a_file_refused_as_a_whole_is_shown_on_the_identities_page_and_nothing_is_stored(
    console: Console, signed_in_page: Callable[..., Page], page_watch: PageWatch
) -> None:
    """An unknown header column, and then a file over the size limit: the identities page
    again, answering 422 and 413, the open form naming the file and what is wrong; no import
    is stored."""
    page_watch.allow("status of 422")
    page_watch.allow("status of 413")
    page = signed_in_page("operator")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        send_from_identities_page(page, "mail,name\nada@example.com,Ada\n")
    assert answer.value.status == 422
    box = page.locator("#import-identities .error-box")
    expect(box).to_contain_text("unknown column 'mail'")
    expect(box.locator(".details")).to_contain_text("header.mail")
    expect(page.locator("h1")).to_have_text("Identities")

    too_large = "email\n" + "".join(f"p{n:04d}@example.com\n" for n in range(300))
    assert len(too_large) > LIMIT
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        send_from_identities_page(page, too_large, "big.csv")
    assert answer.value.status == 413
    box = page.locator("#import-identities .error-box")
    expect(box).to_contain_text(f"{len(too_large)} bytes is more than the {LIMIT} allowed")
    expect(box.locator(".details")).to_contain_text(f"file: larger than {LIMIT} bytes")
    assert imports(console.database) == []

    # far over the limit, the body is refused before the console reads it: a page in words
    # all the same (it was JSON in the browser), with the way back
    huge = "email\n" + "x" * (1024 * 1024 + 80 * 1024)  # (over the request body limit too)
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        send_from_identities_page(page, huge, "huge.csv")
    assert answer.value.status == 413
    assert answer.value.headers["content-type"].startswith("text/html")
    expect(page.locator("h1")).to_have_text("The request was refused")
    expect(page.locator("body")).to_contain_text("larger than the limit of")
    page.get_by_role("link", name="Back to the page").click()
    expect(page).to_have_url(re.compile(r"/identities$"))
    assert imports(console.database) == []


def test_an_auditor_reads_imports_but_may_neither_send_nor_cancel_one(
    console: Console, signed_in_page: Callable[..., Page]
) -> None:
    """identity:read without identity:write: the identities page has no import form (the list
    is linked), the import's page no Cancel; both POSTs, sent with the auditor's own CSRF
    token, are 403 and change nothing."""
    import_id = queued(console.database)
    page = signed_in_page("auditor")
    page.goto("/identities")
    expect(page.get_by_role("link", name="CSV imports")).to_be_visible()
    expect(page.locator("#import-identities")).to_have_count(0)
    expect(page.locator("form[action='/identity-imports']")).to_have_count(0)
    page.goto(f"/identity-imports/{import_id}")
    expect(status_chip(page)).to_have_text("queued")
    expect(page.get_by_role("button", name="Cancel import")).to_have_count(0)

    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    assert token
    sent = page.request.post(
        "/identity-imports",
        multipart={"csrf_token": token, "file": csv_file(PEOPLE)},
        max_redirects=0,
    )
    assert sent.status == 403
    assert "needs the permission identity:write" in sent.text()
    cancelled = page.request.post(
        f"/identity-imports/{import_id}/cancel", form={"csrf_token": token}, max_redirects=0
    )
    assert cancelled.status == 403
    [kept] = imports(console.database)
    assert (kept.id, kept.status) == (import_id, "queued")


def test_cancel_stops_an_import_whose_last_batch_failed(
    console: Console, signed_in_page: Callable[..., Page]
) -> None:
    """A failed batch is a banner saying it was undone and when the workers try again; Cancel
    ends the import: cancelled, by whom, no more refreshing, no Cancel, the rows left unwritten
    never written."""
    import_id = queued(console.database)
    retry_at = (utcnow() + dt.timedelta(minutes=1)).replace(microsecond=0)
    with console.database.transaction() as session:
        imported = identity_imports.get(session, import_id)
        imported.error = "OperationalError: the database went away"
        imported.retry_at = retry_at
    page = signed_in_page("operator")
    page.goto(f"/identity-imports/{import_id}")
    banner = page.locator(".banner.bad")
    expect(banner).to_contain_text("The last batch failed: OperationalError")
    expect(banner).to_contain_text(
        f"the workers try again at {retry_at.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    )
    page.get_by_role("button", name="Cancel import").click()
    expect(page.locator(".flash-success")).to_contain_text(
        "The import of people.csv is cancelled after 0 of 3 rows (0%)"
    )
    expect(status_chip(page)).to_have_text("cancelled")
    expect(page.locator(".import-progress .facts")).to_contain_text("operator@example.com")
    expect(page.locator(".banner.bad")).to_have_count(0)
    expect(page.locator("meta[http-equiv=refresh]")).to_have_count(0)
    expect(page.get_by_role("button", name="Cancel import")).to_have_count(0)
    work_through(console.database)
    with console.database.transaction() as session:
        assert session.execute(select(func.count()).select_from(Identity)).scalar_one() == 0


def test_an_import_whose_batch_keeps_failing_shows_it_failed_and_what_to_do(
    console: Console, signed_in_page: Callable[..., Page], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch failing MAX_FAILURES times in a row fails the import: its page says so, with the
    error (never a row's values) and the next step, and stops refreshing itself."""
    import_id = queued(console.database)

    def refused(self: Any, session: Any, queue: Any, batch: list[Any]) -> None:
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(identity_import.Importer, "write", refused)
    queue = DatabaseQueue(console.database)
    at = dt.datetime.now(dt.UTC)
    try:
        for attempt in range(identity_imports.MAX_FAILURES):
            with console.database.transaction() as session:
                identity_imports.import_due(session, queue, at + attempt * identity_imports.RETRY)
    finally:
        queue.close()
    page = signed_in_page("admin")
    page.goto(f"/identity-imports/{import_id}")
    expect(status_chip(page)).to_have_text("failed")
    banner = page.locator(".banner.bad")
    expect(banner).to_contain_text("The import failed: RuntimeError: the disk is full")
    expect(banner).to_contain_text("import the file again")
    expect(page.locator("meta[http-equiv=refresh]")).to_have_count(0)
    expect(page.get_by_role("button", name="Cancel import")).to_have_count(0)
