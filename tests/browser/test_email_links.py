"""E-mail links land in the console, in Chromium: the approve link of a real e-mail (captured
by an aiosmtpd sink) opens — after signing in — the console page of the approval, whose one
button decides it through the link (used up with the decision)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from grantflow.people.models import ActionLink, Task, TaskDecision
from tests.browser.conftest import PASSWORD, Console
from tests.support.engine import publish, running_worker, wait_status, workflow
from tests.support.ops import approval, set_step, start_run, waiting_task
from tests.support.screenshots import keep
from tests.support.smtp import Sink, smtp_sink

APPROVER = "approver@example.com"
_LINK = re.compile(r"^(Approve|Reject):\n  (\S+)$", re.MULTILINE)


@pytest.fixture
def sink() -> Iterator[Sink]:
    with smtp_sink() as running:
        yield running


@pytest.fixture
def console_overrides(sink: Sink) -> dict[str, Any]:
    """E-mail through the sink (plain SMTP on 127.0.0.1)."""
    return {"smtp_host": "127.0.0.1", "smtp_port": sink.port, "smtp_security": "none"}


def test_emailed_approve_link_opens_the_approval_after_sign_in(
    page: Page, console: Console, sink: Sink
) -> None:
    """The approver's e-mail links to /links/<token> on the console; opened signed out, it asks
    to sign in and comes back to the approval; Approve decides it via email_link, uses the
    link up, and the run succeeds."""
    console.user("approver", APPROVER)
    db = console.database
    wf = publish(
        db, workflow("Laptop request", approval(approvers={"users": [APPROVER]}), set_step())
    )
    with running_worker(db, tick_seconds=0.2):
        run_id = start_run(db, wf)
        task_id = waiting_task(db, run_id)
        (mail,) = sink.wait_for(1)
        links = dict(_LINK.findall(mail.body))
        assert set(links) == {"Approve", "Reject"}
        approve = links["Approve"]
        assert approve.startswith(f"{console.url}/links/"), approve
        assert f"{console.url}/inbox/{task_id}" in mail.body  # "act from your inbox"

        page.goto(approve)
        target = urlsplit(approve).path
        page.wait_for_url(f"**/login?next={target}")
        page.get_by_label("E-mail").fill(APPROVER)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in", exact=True).click()
        page.wait_for_url(approve)
        expect(page.get_by_role("heading", name="Approve from your e-mail")).to_be_visible()
        expect(page.locator("article.task")).to_contain_text("Laptop for Ada Lovelace")
        expect(page.get_by_text("This link works once, for you only")).to_be_visible()
        keep(page, "email-link")

        page.get_by_label("Comment (optional)").fill("approved from my phone")
        page.get_by_role("button", name="Approve").click()
        page.wait_for_url(f"**/inbox/{task_id}")
        expect(page.get_by_text("Approved: Laptop for Ada Lovelace.")).to_be_visible()
        expect(page.locator("[data-task-status]")).to_have_text("approved")
        wait_status(db, run_id, "succeeded")
    with db.transaction() as session:
        task = session.get(Task, task_id)
        assert task is not None
        assert task.status == "approved"
        decision = session.execute(
            select(TaskDecision).where(TaskDecision.task_id == task_id)
        ).scalar_one()
        assert (decision.via, decision.comment) == ("email_link", "approved from my phone")
        used = session.execute(select(ActionLink.used_at).where(ActionLink.task_id == task_id))
        assert all(at is not None for (at,) in used.all())  # both links of the e-mail
