"""The inbox in Chromium: the demo workspace's manager approves the new hire's onboarding
from her inbox and the run provisions the sandbox; a task's form shows each field's error in
place, then submits."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from grantflow.auth.actor import Actor
from grantflow.auth.users import find_user_by_email, set_password
from grantflow.config import master_key
from grantflow.connections.crypto import keyring_for
from grantflow.connections.outbound import outbound_policy
from grantflow.demo import DEMO_APPROVER, ensure_demo_workspace
from grantflow.people.models import Task
from grantflow.queue.database import DatabaseQueue
from grantflow.sandbox.servers import start_sandbox
from tests.browser.conftest import PASSWORD, Console
from tests.support.browser import PageWatch, sign_in
from tests.support.engine import running_worker, wait_status
from tests.support.ops import start_run, task_workflow, waiting_task
from tests.support.screenshots import keep
from tests.support.services import free_port


@pytest.fixture
def console_overrides() -> dict[str, Any]:
    """The sandbox's two servers on free ports (the demo workspace's connections name them)."""
    return {"sandbox": True, "sandbox_port": free_port(), "sandbox_scim_port": free_port()}


@pytest.fixture
def demo(console: Console) -> Iterator[str]:
    """`make run`'s world: the demo workspace on the sandbox, a worker allowed to reach it,
    and Grace (the new hire's manager) with a password. The onboarding run's id."""
    settings = console.settings
    sandbox = start_sandbox(settings, master_key(settings))
    try:
        queue = DatabaseQueue(console.database)
        with console.database.transaction() as session:
            workspace = ensure_demo_workspace(session, queue, settings)
        assert workspace.onboarding_run_id is not None
        with console.database.transaction() as session:
            user = find_user_by_email(session, DEMO_APPROVER)
            assert user is not None
            set_password(session, Actor.system("test"), user.id, PASSWORD)
        with running_worker(
            console.database,
            outbound=outbound_policy(settings),
            keyring=keyring_for(settings),
        ):
            yield workspace.onboarding_run_id
    finally:
        sandbox.stop()


def test_manager_approves_the_onboarding_from_the_inbox(
    page: Page, console: Console, demo: str
) -> None:
    """Grace signs in, finds Katherine's onboarding approval in her inbox with its stage and
    who else can act, approves it with a justification; the inbox is then empty and the run
    page shows the run provisioning the sandbox until it succeeds."""
    run_id = demo
    waiting_task(console.database, run_id)
    sign_in(page, console.url, DEMO_APPROVER, PASSWORD)
    page.get_by_role("link", name="Inbox").click()
    card = page.locator("article.task").filter(has_text="Katherine Johnson")
    expect(card).to_be_visible()
    expect(card.get_by_text("Stage")).to_be_visible()
    expect(card.locator("dd.others")).to_have_text("no one else")
    keep(page, "inbox")
    card.get_by_label("Justification").fill("her start date is confirmed")
    card.get_by_role("button", name="Approve").click()
    expect(page.get_by_text("Approved: Approve the accounts of Katherine Johnson.")).to_be_visible()
    expect(page.get_by_text("Nothing waits on you.")).to_be_visible()

    page.goto(f"/runs/{run_id}")
    expect(page.locator("#run-status")).to_have_text("succeeded", timeout=120_000)
    step = page.locator("details.step[data-step=create_user]")
    expect(step.locator(".chip")).to_have_text("succeeded")
    approval = page.locator("details.step[data-step=manager_approval]")
    expect(approval.locator(".chip")).to_have_text("succeeded")
    expect(approval).to_contain_text(DEMO_APPROVER)  # its output: who approved
    keep(page, "run")
    with console.database.transaction() as session:
        task = session.execute(select(Task).where(Task.run_id == run_id)).scalars().first()
        assert task is not None
        assert (task.status, task.decided_by) == ("approved", DEMO_APPROVER)


@pytest.fixture
def worker(console: Console) -> Iterator[None]:
    with running_worker(console.database):
        yield


def test_task_form_shows_errors_in_place_then_submits(
    signed_in_page: Callable[..., Page], console: Console, worker: None, page_watch: PageWatch
) -> None:
    """An approver opens a task whose form needs a ticket matching INC-<n> and at least one
    seat: bad values come back with each error next to its field (what was typed kept),
    nothing recorded; correct values submit it and the run goes on to succeed."""
    page_watch.allow("status of 422")  # the form shown again with its errors
    db = console.database
    run_id = start_run(db, task_workflow(db))
    task_id = waiting_task(db, run_id)
    page = signed_in_page("approver")
    page.goto(f"/inbox/{task_id}")
    page.get_by_label("Ticket").fill("x")
    page.get_by_label("Seats").fill("0")
    page.get_by_role("button", name="Submit").click()
    ticket_help = page.locator("#field-ticket-help .field-error")
    expect(ticket_help).to_contain_text("does not match")
    expect(page.locator("#field-seats-help .field-error")).to_contain_text(
        "less than the minimum of 1"
    )
    expect(page.get_by_label("Ticket")).to_have_value("x")
    expect(page.get_by_label("Ticket")).to_have_attribute("aria-invalid", "true")
    keep(page, "task-form-errors")
    with db.transaction() as session:
        assert session.get(Task, task_id).status == "pending"  # type: ignore[union-attr]

    page.get_by_label("Ticket").fill("INC-4711")
    page.get_by_label("Seats").fill("2")
    page.get_by_label("Site").select_option("Paris")
    page.get_by_role("button", name="Submit").click()
    expect(page.get_by_text("Submitted: Buy a design-tool licence.")).to_be_visible()
    expect(page.locator("[data-task-status]")).to_have_text("submitted")
    wait_status(db, run_id, "succeeded")
    with db.transaction() as session:
        task = session.get(Task, task_id)
        assert task is not None
        assert task.output == {"ticket": "INC-4711", "seats": 2, "site": "Paris", "urgent": False}
