"""A long run's history over real HTTP on both databases: a looping run of 130 step runs read
through the API (its last step runs, every one a page at a time, its last events) and through
the console (the run page shows the latest and links to the rest, pages that list them all);
bad paging input is refused naming the field."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Role
from grantflow.auth.users import create_user
from grantflow.config import Settings
from tests.conftest import Api
from tests.support.console import signed_in_client
from tests.support.engine import running_worker, wait_status
from tests.support.ops import looping_workflow, start_run

RUNS = "/api/v1/runs"
PASSES = 65  # 130 step runs: more than a run page shows (50) and than a steps page (100)
STEP_RUNS = 2 * PASSES


@pytest.fixture
def long_run(api: Api) -> str:
    """A run that went round its loop PASSES times and failed on the next pass."""
    db = api.database
    with running_worker(db):
        run_id = start_run(db, looping_workflow(db, PASSES))
        shown = wait_status(db, run_id, "failed", timeout=120)
    assert shown["failure"]["code"] == "loop_bound_exceeded"
    return run_id


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def refused(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


def test_the_detail_can_hold_only_the_last_step_runs_and_counts_them_all(
    admin: httpx.Client, long_run: str
) -> None:
    """`steps_limit=50`: the last 50 step runs in the order they ran, with their attempts, and
    steps_total the whole count; without it every step run, as before."""
    whole = ok(admin.get(f"{RUNS}/{long_run}"))
    assert whole["steps_total"] == STEP_RUNS
    assert [s["sequence"] for s in whole["steps"]] == list(range(1, STEP_RUNS + 1))

    latest = ok(admin.get(f"{RUNS}/{long_run}", params={"steps_limit": 50}))
    assert latest["steps_total"] == STEP_RUNS
    assert latest["steps"] == whole["steps"][-50:]
    assert latest["steps"][-1]["step_id"] == "again"
    assert latest["steps"][-2]["attempt_log"] == whole["steps"][-2]["attempt_log"]
    assert latest["failure"] == whole["failure"]  # the rest of the detail is the same


def test_every_step_run_comes_a_page_at_a_time_newest_first(
    admin: httpx.Client, long_run: str
) -> None:
    """GET /runs/{id}/steps: pages of 50, 50 and 30, newest first; each step run once, as the
    whole detail shows it; the last page has no next_cursor."""
    whole = ok(admin.get(f"{RUNS}/{long_run}"))["steps"]
    pages, cursor = [], None
    while True:
        page = ok(admin.get(f"{RUNS}/{long_run}/steps", params={"limit": 50, "cursor": cursor}))
        pages.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [50, 50, STEP_RUNS - 100]
    shown = [step for page in pages for step in page]
    assert shown == list(reversed(whole))


def test_the_timeline_can_hold_only_its_last_events(admin: httpx.Client, long_run: str) -> None:
    """`limit=30`: the whole timeline's last 30 events, oldest first, and total the count."""
    whole = ok(admin.get(f"{RUNS}/{long_run}/timeline"))
    assert whole["total"] == len(whole["events"]) > STEP_RUNS
    last = ok(admin.get(f"{RUNS}/{long_run}/timeline", params={"limit": 30}))
    assert last["events"] == whole["events"][-30:]
    assert last["total"] == whole["total"]
    assert last["events"][-1]["kind"] == "failed"


def test_bad_paging_input_is_refused_naming_the_field(admin: httpx.Client, long_run: str) -> None:
    """A limit out of range is a 422 naming it, a forged cursor a 400 naming the cursor, an
    unknown run a 404; nothing is read past them."""
    for path, params, field in (
        (f"{RUNS}/{long_run}", {"steps_limit": 0}, "steps_limit"),
        (f"{RUNS}/{long_run}", {"steps_limit": "all"}, "steps_limit"),
        (f"{RUNS}/{long_run}/steps", {"limit": 501}, "limit"),
        (f"{RUNS}/{long_run}/timeline", {"limit": -1}, "limit"),
    ):
        error = refused(admin.get(path, params=params), 422)
        assert any(d["field"] == f"query.{field}" for d in error["details"]), error
    forged = refused(admin.get(f"{RUNS}/{long_run}/steps", params={"cursor": "abc"}), 400)
    assert "cursor" in forged["message"]
    assert forged["details"][0]["field"] == "query.cursor"
    assert refused(admin.get(f"{RUNS}/no-such-run/steps"), 404)["code"] == "not_found"


@pytest.fixture
def viewer(api: Api, settings: Settings) -> Iterator[httpx.Client]:
    """A viewer signed in to the console."""
    with api.database.transaction() as session:
        create_user(session, Actor.system("test"), email="vera@example.com", roles=[Role.VIEWER])
    client, _ = signed_in_client(api.base_url, api.database, settings, "vera@example.com")
    with client:
        yield client


def steps_on(page: str) -> int:
    return page.count('<details class="step"')


def test_the_run_page_shows_the_latest_and_links_to_the_rest(
    viewer: httpx.Client, admin: httpx.Client, long_run: str
) -> None:
    """The run page (and its live part) shows the last 50 step runs and the last 100 events,
    says how many there are and links to pages that show them all: the steps page, 100 newest
    first, then the 30 earlier; the timeline page, every event."""
    page = viewer.get(f"/runs/{long_run}")
    assert page.status_code == 200, page.text
    assert steps_on(page.text) == 50
    assert f"The last 50 of {STEP_RUNS} step runs." in page.text
    assert f'href="/runs/{long_run}/steps"' in page.text
    assert page.text.count("<li data-kind=") == 100
    assert f'href="/runs/{long_run}/timeline"' in page.text
    assert "step run 130" in page.text
    assert "step run 80" not in page.text
    assert steps_on(viewer.get(f"/runs/{long_run}/live").text) == 50

    first = viewer.get(f"/runs/{long_run}/steps")
    assert first.status_code == 200, first.text
    assert f"{STEP_RUNS} step runs, newest first" in first.text
    assert steps_on(first.text) == 100
    assert first.text.index("step run 130") < first.text.index("step run 31<")
    earlier = first.text.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0]
    second = viewer.get(earlier.replace("&amp;", "&"))
    assert steps_on(second.text) == STEP_RUNS - 100
    assert "step run 1<" in second.text
    assert 'rel="next"' not in second.text

    events = ok(admin.get(f"{RUNS}/{long_run}/timeline"))
    whole = viewer.get(f"/runs/{long_run}/timeline")
    assert whole.text.count("<li data-kind=") == events["total"]


def test_a_forged_cursor_on_the_steps_page_is_refused_in_words(
    viewer: httpx.Client, long_run: str
) -> None:
    """A console steps page with a cursor the API did not give: a 400 page naming it."""
    page = viewer.get(f"/runs/{long_run}/steps", params={"cursor": "abc"})
    assert page.status_code == 400
    assert "Cursor: not a cursor returned by this API." in page.text
    assert "<code>query.cursor</code>: invalid cursor" in page.text
    assert "Traceback" not in page.text
