"""The run pages in Chromium: a failed run's Retry button resumes it and the timeline names
the operator; a forced cancel shows the steps that acted first; the run page follows a moving
run without a reload; a long run's page shows its latest steps and leads to the rest; a viewer
sees no action and a forged POST is a 403, audited."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from grantflow.audit.models import AuditEntry
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.auth.users import find_user_by_email
from grantflow.engine.models import Run
from grantflow.people import decisions
from grantflow.queue.database import DatabaseQueue
from tests.browser.conftest import Console
from tests.support.browser import PageWatch
from tests.support.engine import running_worker, wait_status
from tests.support.ops import (
    acting_workflow,
    approval_workflow,
    failing_workflow,
    looping_workflow,
    start_run,
    waiting_task,
)
from tests.support.screenshots import keep
from tests.support.target import Reply, Target, running_target


@pytest.fixture
def worker(console: Console) -> Iterator[None]:
    with running_worker(console.database):
        yield


@pytest.fixture
def target() -> Iterator[Target]:
    with running_target() as running:
        yield running


def failed_run(console: Console, target: Target) -> str:
    """A run whose external call got a 503 (one attempt): failed, class transient."""
    target.on("/accounts", Reply(503, {"error": "maintenance"}))
    db = console.database
    run_id = start_run(db, failing_workflow(db, f"{target.url}/accounts"))
    wait_status(db, run_id, "failed")
    return run_id


def test_retry_button_resumes_a_failed_run_and_the_timeline_names_the_operator(
    signed_in_page: Callable[..., Page], console: Console, worker: None, target: Target
) -> None:
    """An operator opens a failed run: the failure reason (class, step, message) and Retry as
    the next action; once the target is back, Retry resumes the same run to success and its
    timeline shows the operator who retried it."""
    run_id = failed_run(console, target)
    page = signed_in_page("operator")
    page.goto("/runs?status=failed")
    keep(page, "runs")
    page.get_by_role("link", name=run_id[:8]).click()
    failure = page.locator("section.failure")
    expect(failure).to_contain_text("transient")
    expect(failure).to_contain_text("create_account")
    expect(failure.locator(".failure-message")).to_contain_text("503")
    retry = page.locator(".run-buttons button.primary")
    expect(retry).to_have_text("Retry")
    keep(page, "run-failed")

    target.on("/accounts", Reply(201, {"id": "acct-1"}))
    retry.click()
    expect(page.get_by_text("Retried: the run resumes from its failed step.")).to_be_visible()
    expect(page.locator("#run-status")).to_have_text("succeeded")
    queued = page.locator(".timeline li[data-kind=queued]").filter(has_text="operation: retry")
    expect(queued).to_contain_text("by operator@example.com")
    assert page.url.endswith(f"/runs/{run_id}")  # the same run, resumed


def test_forced_cancel_shows_the_acted_steps_first(
    signed_in_page: Callable[..., Page], console: Console, worker: None, target: Target
) -> None:
    """Cancelling a run after its create_account call acted asks first, naming that step;
    confirming cancels it and the run records the step as acted."""
    target.on("/accounts", Reply(201, {"id": "acct-1"}))
    db = console.database
    run_id = start_run(db, acting_workflow(db, f"{target.url}/accounts"))
    waiting_task(db, run_id)
    page = signed_in_page("operator")
    page.goto(f"/runs/{run_id}")
    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_text("These steps already acted on external systems:")).to_be_visible()
    expect(page.locator("ul.acted-steps")).to_have_text("create_account")
    keep(page, "run-cancel-confirm")
    with db.transaction() as session:
        assert session.get(Run, run_id).status == "waiting"  # type: ignore[union-attr]

    page.get_by_role("button", name="Cancel anyway").click()
    expect(page.get_by_text("Cancelled after create_account had acted.")).to_be_visible()
    expect(page.locator("#run-status")).to_have_text("cancelled")
    expect(page.locator("dd.acted-steps")).to_have_text("create_account")


def test_run_page_updates_itself_while_the_run_moves(
    signed_in_page: Callable[..., Page], console: Console, worker: None
) -> None:
    """A run page open on a run waiting for approval shows it succeed once someone approves
    elsewhere — without a reload — and then stops polling."""
    db = console.database
    run_id = start_run(db, approval_workflow(db))
    task_id = waiting_task(db, run_id)
    console.user("approver", "boss@example.com")
    page = signed_in_page("viewer")
    page.goto(f"/runs/{run_id}")
    expect(page.locator("#run-status")).to_have_text("waiting")
    expect(page.locator("section.waiting")).to_contain_text("Laptop for Ada Lovelace")
    page.evaluate("window.stillTheSamePage = true")

    with db.transaction() as session:
        boss = find_user_by_email(session, "boss@example.com")
        assert boss is not None
        actor = Actor(
            label=boss.email, user_id=boss.id, permissions=frozenset({Permission.WORKFLOW_TASK})
        )
        decisions.decide(
            session, actor, DatabaseQueue(db), task_id, decisions.Action.APPROVE, comment="ok"
        )
    expect(page.locator("#run-status")).to_have_text("succeeded")
    assert page.evaluate("window.stillTheSamePage") is True  # updated in place, not reloaded
    expect(page.locator("#run-live")).not_to_have_attribute("hx-trigger", "every 2s")


def test_viewer_sees_no_action_and_a_forged_post_is_refused_and_audited(
    signed_in_page: Callable[..., Page],
    console: Console,
    worker: None,
    target: Target,
    page_watch: PageWatch,
) -> None:
    """A viewer sees a failed run's reason and advice but no button, and a pending approval
    without its decision form; a POST to Retry with the page's own CSRF token is a 403 page,
    leaves the run failed, and is audited as console.forbidden."""
    run_id = failed_run(console, target)
    db = console.database
    waiting = start_run(db, approval_workflow(db))
    task_id = waiting_task(db, waiting)
    page = signed_in_page("viewer")
    page.goto(f"/runs/{run_id}")
    expect(page.locator("section.failure")).to_be_visible()
    expect(page.locator("#run-live button")).to_have_count(0)
    expect(page.locator("main form[method=post]")).to_have_count(0)
    page.goto(f"/inbox/{task_id}")
    expect(page.locator("article.task")).to_contain_text("Laptop for Ada Lovelace")
    expect(page.locator("main form[method=post]")).to_have_count(0)
    expect(page.locator("main button")).to_have_count(0)

    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    assert token
    response = page.request.post(f"/runs/{run_id}/retry", form={"csrf_token": token})
    assert response.status == 403
    assert "This action needs the permission run:operate." in response.text()
    with db.transaction() as session:
        assert session.get(Run, run_id).status == "failed"  # type: ignore[union-attr]
        entry = session.execute(
            select(AuditEntry).where(
                AuditEntry.action == "console.forbidden",
                AuditEntry.target_id == f"/runs/{run_id}/retry",
            )
        ).scalar_one()
        assert entry.actor == "viewer@example.com"
        assert entry.summary["method"] == "POST"


def test_a_long_runs_page_shows_its_latest_steps_and_leads_to_every_one(
    signed_in_page: Callable[..., Page], console: Console, worker: None
) -> None:
    """A run that looped 110 times (220 step runs): its page shows the last 50 and says so;
    "Every step run" lists them newest first, 100 a page ("Earlier steps"); "Every event" the
    timeline, newest first, 200 a page ("Earlier events")."""
    db = console.database
    run_id = start_run(db, looping_workflow(db, 110))
    wait_status(db, run_id, "failed", timeout=120)
    page = signed_in_page("viewer")
    page.goto(f"/runs/{run_id}")
    expect(page.locator("#run-status")).to_have_text("failed")
    expect(page.locator("details.step")).to_have_count(50)
    expect(page.get_by_text("The last 50 of 220 step runs.")).to_be_visible()
    expect(page.locator(".timeline li")).to_have_count(100)

    page.get_by_role("link", name="Every step run").click()
    expect(page.get_by_role("heading", name="220 step runs, newest first")).to_be_visible()
    expect(page.locator("details.step")).to_have_count(100)
    expect(page.locator("details.step").first).to_contain_text("step run 220")
    keep(page, "run-steps")
    page.get_by_role("link", name="Earlier steps").click()
    expect(page.locator("details.step").first).to_contain_text("step run 120")
    page.get_by_role("link", name="Earlier steps").click()
    expect(page.locator("details.step")).to_have_count(20)
    expect(page.locator("details.step").last).to_contain_text("step run 1")
    expect(page.get_by_role("link", name="Earlier steps")).to_have_count(0)

    page.goto(f"/runs/{run_id}")
    page.get_by_role("link", name="Every event").click()
    heading = page.get_by_role("heading", name=re.compile(r"^2\d\d events, newest first$"))
    expect(heading).to_be_visible()
    expect(page.locator(".timeline li")).to_have_count(200)
    expect(page.locator(".timeline li").first).to_have_attribute("data-kind", "failed")
    page.get_by_role("link", name="Earlier events").click()
    expect(page.locator(".timeline li").last).to_have_attribute("data-kind", "queued")
