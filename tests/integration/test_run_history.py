"""A long run's history over real HTTP on both databases: a looping run of 220 step runs read
through the API (its last step runs, every one a page at a time, its last events, every event
a page at a time) and through the console (the run page shows the latest and links to the
rest, pages that list them all); bad paging input is refused naming the field."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Role
from grantflow.auth.users import create_user
from grantflow.config import Settings
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.console import signed_in_client
from tests.support.engine import running_worker, wait_status
from tests.support.ops import looping_workflow, start_run

RUNS = "/api/v1/runs"
# 220 step runs and 223 events: more than a run page shows (50, 100), than a steps page (100)
# and than a timeline page (200)
PASSES = 110
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
    """GET /runs/{id}/steps: pages of 50 until the first step run, newest first; each step run
    once, as the whole detail shows it; the last page has no next_cursor."""
    whole = ok(admin.get(f"{RUNS}/{long_run}"))["steps"]
    pages, cursor = [], None
    while True:
        page = ok(admin.get(f"{RUNS}/{long_run}/steps", params={"limit": 50, "cursor": cursor}))
        pages.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [50, 50, 50, 50, STEP_RUNS - 200]
    shown = [step for page in pages for step in page]
    assert shown == list(reversed(whole))


def test_every_event_comes_a_page_at_a_time_newest_first(
    admin: httpx.Client, long_run: str
) -> None:
    """GET /runs/{id}/events: pages of 100 until the first event, newest first: the whole
    timeline reversed, each event once."""
    whole = ok(admin.get(f"{RUNS}/{long_run}/timeline"))["events"]
    shown, cursor, pages = [], None, 0
    while True:
        page = ok(admin.get(f"{RUNS}/{long_run}/events", params={"limit": 100, "cursor": cursor}))
        shown.extend(page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == -(-len(whole) // 100)
    assert shown == list(reversed(whole))


def test_the_timeline_can_hold_only_its_last_events(admin: httpx.Client, long_run: str) -> None:
    """`limit=30`: the whole timeline's last 30 events, oldest first, and total the count."""
    whole = ok(admin.get(f"{RUNS}/{long_run}/timeline"))
    assert whole["total"] == len(whole["events"]) > STEP_RUNS
    last = ok(admin.get(f"{RUNS}/{long_run}/timeline", params={"limit": 30}))
    assert last["events"] == whole["events"][-30:]
    assert last["total"] == whole["total"]
    assert last["events"][-1]["kind"] == "failed"


def far_cursor(key: int) -> str:
    """A cursor as the API writes them, around a key no page gave: past a 32-bit column."""
    return base64.urlsafe_b64encode(json.dumps({"k": key}).encode()).decode().rstrip("=")


def test_bad_paging_input_is_refused_naming_the_field(admin: httpx.Client, long_run: str) -> None:
    """A limit out of range is a 422 naming it, a forged cursor (not one the API gave, or one
    whose key is past what a page can give) a 400 naming the cursor, an unknown run a 404."""
    for path, params, field in (
        (f"{RUNS}/{long_run}", {"steps_limit": 0}, "steps_limit"),
        (f"{RUNS}/{long_run}", {"steps_limit": "all"}, "steps_limit"),
        (f"{RUNS}/{long_run}/steps", {"limit": 501}, "limit"),
        (f"{RUNS}/{long_run}/timeline", {"limit": -1}, "limit"),
    ):
        error = refused(admin.get(path, params=params), 422)
        assert any(d["field"] == f"query.{field}" for d in error["details"]), error
    # (a step run's sequence is a 32-bit column; an event's id 64)
    for path, past in ((f"{RUNS}/{long_run}/steps", 2**31), (f"{RUNS}/{long_run}/events", 2**63)):
        for cursor in ("abc", far_cursor(past), far_cursor(-past - 1)):
            forged = refused(admin.get(path, params={"cursor": cursor}), 400)
            assert "cursor" in forged["message"]
            assert forged["details"][0]["field"] == "query.cursor"
    assert refused(admin.get(f"{RUNS}/no-such-run/steps"), 404)["code"] == "not_found"
    assert refused(admin.get(f"{RUNS}/no-such-run/events"), 404)["code"] == "not_found"


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


def earlier_link(page: str) -> str:
    """The pager's link to the next (earlier) page."""
    return page.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")


def test_the_run_page_shows_the_latest_and_links_to_the_rest(
    viewer: httpx.Client, admin: httpx.Client, long_run: str
) -> None:
    """The run page (and its live part) shows the last 50 step runs and the last 100 events,
    says how many there are and links to pages that show them all: the steps page, 100 newest
    first, a page at a time; the timeline page, 200 events newest first, then the rest."""
    page = viewer.get(f"/runs/{long_run}")
    assert page.status_code == 200, page.text
    assert steps_on(page.text) == 50
    assert f"The last 50 of {STEP_RUNS} step runs." in page.text
    assert f'href="/runs/{long_run}/steps"' in page.text
    assert page.text.count("<li data-kind=") == 100
    assert f'href="/runs/{long_run}/timeline">Every event</a>' in page.text
    assert "step run 220" in page.text
    assert "step run 170<" not in page.text
    assert steps_on(viewer.get(f"/runs/{long_run}/live").text) == 50

    first = viewer.get(f"/runs/{long_run}/steps")
    assert first.status_code == 200, first.text
    assert f"{STEP_RUNS} step runs, newest first" in first.text
    assert first.text.index("step run 220") < first.text.index("step run 121<")
    counts, shown = [], first
    while True:
        counts.append(steps_on(shown.text))
        if 'rel="next"' not in shown.text:
            break
        shown = viewer.get(earlier_link(shown.text))
    assert counts == [100, 100, STEP_RUNS - 200]
    assert "step run 1<" in shown.text

    total = ok(admin.get(f"{RUNS}/{long_run}/timeline"))["total"]
    newest = viewer.get(f"/runs/{long_run}/timeline")
    assert f"{total} events, newest first" in newest.text
    assert newest.text.count("<li data-kind=") == 200
    assert newest.text.split("<li data-kind=")[1].startswith('"failed"')  # the newest first
    rest = viewer.get(earlier_link(newest.text))
    assert rest.text.count("<li data-kind=") == total - 200
    assert rest.text.split("<li data-kind=")[-1].startswith('"queued"')  # the first, last


def test_a_forged_cursor_on_the_steps_page_is_refused_in_words(
    viewer: httpx.Client, long_run: str
) -> None:
    """A console steps or timeline page with a cursor the API did not give (or whose key is
    past what a page gives): a 400 page naming it."""
    for path, past in ((f"/runs/{long_run}/steps", 2**31), (f"/runs/{long_run}/timeline", 2**63)):
        for cursor in ("abc", far_cursor(past)):
            page = viewer.get(path, params={"cursor": cursor})
            assert page.status_code == 400, (path, cursor)
            assert "Cursor: not a cursor returned by this API." in page.text
            assert "<code>query.cursor</code>: invalid cursor" in page.text
            assert "Traceback" not in page.text


@pytest.mark.postgres
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_snapshot_reads_one_moment_and_leaves_the_pool_as_it_was(database: Database) -> None:
    """`Database.snapshot()` on PostgreSQL, which a history page reads in (so its counts agree
    with its rows while the run moves): a row committed by another session during it is not
    seen by its later reads; the next transaction on the pool sees it. (SQLite's transaction
    holds the write lock: nothing commits during it.)"""
    with database.transaction() as session:
        session.execute(text("CREATE TABLE snap_probe (n integer)"))
    with database.snapshot() as session:
        before = session.execute(text("SELECT count(*) FROM snap_probe")).scalar_one()
        with database.engine.begin() as other:
            other.execute(text("INSERT INTO snap_probe VALUES (1)"))
        during = session.execute(text("SELECT count(*) FROM snap_probe")).scalar_one()
    levels = set()
    for _ in range(database.engine.pool.size() + 1):  # (every pooled connection it may get)
        with database.transaction() as session:
            after = session.execute(text("SELECT count(*) FROM snap_probe")).scalar_one()
            levels.add(session.execute(text("SHOW transaction_isolation")).scalar_one())
    with database.transaction() as session:
        session.execute(text("DROP TABLE snap_probe"))
    assert (before, during, after) == (0, 0, 1)
    assert levels == {"read committed"}  # no later write runs at the snapshot's level
