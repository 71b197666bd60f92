"""Safety in the console (Chromium): a workflow paused by a breaker says so on its page, with
the runs it holds, and Resume workflow releases them; the usage page shows the counters and
adjusts a cap."""

from __future__ import annotations

import re
from collections.abc import Callable

from playwright.sync_api import Page, expect
from sqlalchemy import select

from grantflow.auth.actor import Actor
from grantflow.definitions import workflows
from grantflow.definitions.models import Workflow
from grantflow.engine.models import Run
from grantflow.engine.runs import start_run
from grantflow.queue.database import DatabaseQueue
from grantflow.safety import breakers, spend
from grantflow.store.base import utcnow
from tests.browser.conftest import Console
from tests.support.browser import screenshot

ACTOR = Actor.system("test")
GUARDED = {
    "name": "Guarded sync",
    "trigger": {"type": "manual"},
    "safety": {"max_runs_per_minute": 1},
    "steps": [{"id": "note", "type": "set", "config": {"values": {"done": True}}}],
}


def test_a_workflow_paused_for_safety_is_resumed_from_its_page(
    console: Console, signed_in_page: Callable[..., Page]
) -> None:
    """The breaker's banner names the breaker, its figures and the held run; an editor presses
    Resume workflow: the banner is gone, the workflow is no longer paused and its run is
    released."""
    queue = DatabaseQueue(console.database)
    with console.database.transaction() as session:
        workflow_id = workflows.apply_document(session, ACTOR, GUARDED, publish_it=True).workflow.id
        breakers.trip(
            session, workflow_id, "max_runs_per_minute", {"limit": 1, "observed": 2}, utcnow()
        )
    with console.database.transaction() as session:
        held = start_run(session, ACTOR, queue, workflow_id, {}).id
    page = signed_in_page("editor")
    page.goto(f"/workflows/{workflow_id}")
    banner = page.locator("#paused-for-safety")
    expect(banner).to_contain_text("Workflow paused for safety")
    expect(banner).to_contain_text("max_runs_per_minute")
    expect(banner).to_contain_text("1 held now")
    # the time it tripped, to the second like every time on the console
    expect(banner).to_contain_text(re.compile(r"Tripped at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\."))
    screenshot(page, "workflow-paused-for-safety")
    banner.get_by_role("button", name="Resume workflow").click()
    expect(page.locator(".flash-success")).to_have_text(
        "Workflow Guarded sync resumed: its held runs go on, oldest first."
    )
    expect(page.locator("#paused-for-safety")).to_have_count(0)
    with console.database.transaction() as session:
        workflow = session.get(Workflow, workflow_id)
        assert workflow is not None
        assert workflow.safety_pause is None
        run = session.execute(select(Run).where(Run.id == held)).scalar_one()
        assert run.waiting_reason != "safety"


def test_a_viewer_sees_the_pause_but_no_resume_button(
    console: Console, signed_in_page: Callable[..., Page]
) -> None:
    """A viewer reads the same banner, with who resumes it instead of the button."""
    with console.database.transaction() as session:
        workflow_id = workflows.apply_document(session, ACTOR, GUARDED, publish_it=True).workflow.id
        breakers.trip(
            session, workflow_id, "max_runs_per_minute", {"limit": 1, "observed": 2}, utcnow()
        )
    page = signed_in_page("viewer")
    page.goto(f"/workflows/{workflow_id}")
    banner = page.locator("#paused-for-safety")
    expect(banner).to_contain_text("Resumed by a person with workflow:publish")
    expect(banner.get_by_role("button", name="Resume workflow")).to_have_count(0)


def test_the_usage_page_shows_the_counters_and_adjusts_a_cap(
    console: Console, signed_in_page: Callable[..., Page]
) -> None:
    """An editor sets the workspace's daily cap on runs on the usage page: the page says so
    and shows the cap; a cap that is not a whole number is refused naming the field."""
    page = signed_in_page("editor")
    page.goto("/usage")
    expect(page.get_by_role("heading", name="Adjust a cap")).to_be_visible()
    form = page.locator("form[action='/usage/caps']")
    form.get_by_label("Kind").select_option("runs")
    form.get_by_label("Period").select_option("day")
    form.get_by_label("Cap").fill("25")
    form.get_by_role("button", name="Adjust cap").click()
    expect(page.locator(".flash-success")).to_have_text("The day cap on runs is set to 25.")
    row = page.locator("tr", has=page.locator("td", has_text="workspace")).filter(has_text="runs")
    expect(row.filter(has_text="day").first).to_contain_text("25")
    with console.database.transaction() as session:
        shown = spend.usage(session)
    runs_day = [
        r for r in shown["workspace"]["usage"] if (r["kind"], r["period"]) == ("runs", "day")
    ]
    assert [r["cap"] for r in runs_day] == [25]
    screenshot(page, "usage-and-caps")

    form = page.locator("form[action='/usage/caps']")
    form.get_by_label("Cap").fill("lots")
    form.get_by_role("button", name="Adjust cap").click()
    expect(page.locator(".flash-error")).to_have_text(
        "Cap: a whole number, or empty to remove the cap."
    )
