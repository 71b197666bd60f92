"""The runs list reads only the runs it shows, whatever its filter (PostgreSQL, 20,000 runs).

The list is newest first. A filter whose runs are all old (the failures of an outage weeks ago,
a workflow retired last year, last month's window) once made the server walk every newer run
to skip it: the console home page's failed runs cost half a second at a million runs. Each
listing here is checked twice: its runs are the ones a plain filter over every run gives, and
the server's own count of the rows it read (EXPLAIN ANALYZE of the statement the list sent)
stays near the page's 51, not the table's 20,000."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select, text

from grantflow.config import Settings
from grantflow.engine.models import Run
from grantflow.store.base import first_id_at, new_id, utcnow
from tests.conftest import Api
from tests.support.console import signed_in_client
from tests.support.engine import publish, start, workflow
from tests.support.ops import set_step
from tests.support.plans import every_page, rows_read, selects_on

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("database", ["postgresql"], indirect=True),
]

RUNS = 20_000
OLD = 1_000  # the oldest: failed, of the retired workflow (5 %: expected anywhere)
# the current workflow's newer half on its version 2, the rest on version 1
NEWER_VERSION_FROM = RUNS // 2
NOW = utcnow()


def minted(moment: dt.datetime) -> str:
    """An id as `new_id` makes it at `moment` (UUIDv7: its time, then random bits)."""
    tail = secrets.token_hex(9)
    return f"{first_id_at(moment)}-7{tail[:3]}-8{tail[3:6]}-{tail[6:]}"


@pytest.fixture
def history(api: Api) -> dict[str, Any]:
    """RUNS runs, one a minute back from now, copied from a run Grantflow created: the OLD
    oldest failed and of a retired workflow, every other succeeded, of the current one (the
    newer half on its version 2)."""
    db = api.database
    current = publish(db, workflow("Current", set_step("only")))
    retired = publish(db, workflow("Retired", set_step("only")))
    seed = start(db, current, {})
    with db.transaction() as session:
        template = session.get(Run, seed)
        assert template is not None
        row = {c.key: getattr(template, c.key) for c in Run.__table__.columns}
        session.delete(template)
    rows = []
    for i in range(RUNS):
        at = NOW - dt.timedelta(minutes=RUNS - i)
        old = i < OLD
        rows.append(
            {
                **row,
                "id": minted(at),
                "created_at": at,
                "status": "failed" if old else "succeeded",
                "workflow_id": retired if old else current,
                "version": 2 if i >= NEWER_VERSION_FROM else row["version"],
            }
        )
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM queue_items"))
        conn.execute(insert(Run.__table__), rows)
        conn.execute(text("ANALYZE runs"))
    return {"current": current, "retired": retired, "rows": rows}


@pytest.fixture
def sent(api: Api) -> Iterator[list[tuple[str, Any]]]:
    """The SELECTs on runs this process sends while a test runs."""
    with selects_on(api.database, "runs") as seen:
        yield seen


def listed(admin: httpx.Client, **params: Any) -> list[str]:
    answer = admin.get("/api/v1/runs", params={"limit": 50, **params})
    assert answer.status_code == 200, answer.text
    return [item["id"] for item in answer.json()["items"]]


def newest(rows: list[dict[str, Any]], keep: Any, count: int = 50) -> list[str]:
    return sorted((r["id"] for r in rows if keep(r)), reverse=True)[:count]


PAGE_READ = 200  # rows a listing may read: its page of 51, and room for the plan's shape


def test_each_filter_lists_its_runs_and_reads_about_a_page(
    api: Api, admin: httpx.Client, history: dict[str, Any], sent: list[tuple[str, Any]]
) -> None:
    rows = history["rows"]
    current, retired = history["current"], history["retired"]
    window_start, window_end = NOW - dt.timedelta(days=13), NOW - dt.timedelta(days=12)
    listings: list[tuple[dict[str, Any], Any, int]] = [
        ({"status": "failed"}, lambda r: r["status"] == "failed", PAGE_READ),
        ({"status": "succeeded"}, lambda r: r["status"] == "succeeded", PAGE_READ),
        ({"status": "timed_out"}, lambda r: False, PAGE_READ),
        ({"workflow_id": retired}, lambda r: r["workflow_id"] == retired, PAGE_READ),
        ({"workflow_id": current}, lambda r: r["workflow_id"] == current, PAGE_READ),
        # an old version's runs, behind the newer version's (the version's own index)
        (
            {"workflow_id": current, "version": 1},
            lambda r: r["workflow_id"] == current and r["version"] == 1,
            PAGE_READ,
        ),
        (
            {"workflow_id": current, "version": 2},
            lambda r: r["workflow_id"] == current and r["version"] == 2,
            PAGE_READ,
        ),
        # and a status on that walk
        (
            {"workflow_id": current, "version": 1, "status": "succeeded"},
            lambda r: r["workflow_id"] == current and r["version"] == 1,
            PAGE_READ,
        ),
        ({"until": window_start.isoformat()}, lambda r: r["created_at"] < window_start, PAGE_READ),
        (
            {"since": window_start.isoformat(), "until": window_end.isoformat()},
            lambda r: window_start <= r["created_at"] < window_end,
            PAGE_READ,
        ),
        ({}, lambda r: True, PAGE_READ),
        # both: the runs of the smaller of the two (each index's entries, then the rows)
        (
            {"workflow_id": retired, "status": "failed"},
            lambda r: r["workflow_id"] == retired,
            3 * OLD + PAGE_READ,
        ),
    ]
    for params, keep, most in listings:
        sent.clear()
        assert listed(admin, **params) == newest(rows, keep), params
        (statement, parameters), *_ = [s for s in sent if "runs.id DESC" in s[0]]
        read = rows_read(api.database, statement, parameters)
        assert read <= most, f"{params}: the server read {read} rows for a page of 50"


def test_the_old_failures_page_to_the_end_each_once(
    api: Api, admin: httpx.Client, history: dict[str, Any]
) -> None:
    """The 1,000 failed runs, 200 a page, newest first: each once, then no cursor; every page
    reads about itself, not the runs older than its cursor."""
    params = {"status": "failed", "limit": 200}
    seen = every_page(api.database, admin, "/api/v1/runs", params, "runs", "runs.id DESC")
    assert seen == newest([r for r in history["rows"] if r["status"] == "failed"], bool, OLD)


def test_an_old_versions_runs_page_to_the_end_each_once(
    api: Api, admin: httpx.Client, history: dict[str, Any]
) -> None:
    """The current workflow's 9,000 runs on version 1, 500 a page: each once, then no
    cursor; every page reads about itself, not the newer version's runs or older ones."""
    current = history["current"]
    params = {"workflow_id": current, "version": 1, "limit": 500}
    seen = every_page(api.database, admin, "/api/v1/runs", params, "runs", "runs.id DESC")
    keep = [r for r in history["rows"] if r["workflow_id"] == current and r["version"] == 1]
    assert seen == newest(keep, bool, len(keep))


def test_the_home_page_failed_runs_read_about_a_page(
    api: Api,
    admin: httpx.Client,
    settings: Settings,
    history: dict[str, Any],
    sent: list[tuple[str, Any]],
) -> None:
    """The console home page's failed and timed-out runs (every visit): the failures are the
    oldest runs here."""
    console, _ = signed_in_client(api.base_url, api.database, settings, "admin@example.com")
    with console:
        sent.clear()
        page = console.get("/")
        assert page.status_code == 200
    assert "Failed runs" in page.text
    statuses = [s for s in sent if "WHERE runs.status" in s[0] and "runs.id DESC" in s[0]]
    assert len(statuses) >= 2  # failed, timed out
    for statement, parameters in statuses:
        assert rows_read(api.database, statement, parameters) <= PAGE_READ


def test_a_workflow_page_reads_its_latest_run_not_all(
    api: Api, admin: httpx.Client, history: dict[str, Any], sent: list[tuple[str, Any]]
) -> None:
    """A workflow's page says when it last started a run: its newest run's, read from the
    newest end of the workflow's runs."""
    answer = admin.get(f"/api/v1/workflows/{history['current']}")
    assert answer.status_code == 200, answer.text
    with api.database.transaction() as session:
        latest = session.execute(
            select(Run.created_at)
            .where(Run.workflow_id == history["current"])
            .order_by(Run.created_at.desc())
            .limit(1)
        ).scalar_one()
    shown = answer.json()["last_run_at"]
    assert dt.datetime.fromisoformat(shown.replace("Z", "+00:00")) == latest
    latest_reads = [s for s in sent if "runs.id DESC" in s[0] and "LIMIT" in s[0]]
    assert latest_reads
    for statement, parameters in latest_reads:
        assert rows_read(api.database, statement, parameters) <= 10


def test_a_busy_process_mints_ids_at_its_clock(api: Api, admin: httpx.Client) -> None:
    """Ids made faster than one a millisecond (two per step: a busy worker) keep the clock's
    millisecond, so a run made next is listed by a window that holds its creation."""
    for _ in range(300_000):  # (about a minute ahead, were each id a millisecond later)
        new_id()
    db = api.database
    run_id = start(db, publish(db, workflow("After a burst", set_step("only"))), {})
    with db.transaction() as session:
        created = session.execute(select(Run.created_at).where(Run.id == run_id)).scalar_one()
    assert run_id < first_id_at(created + dt.timedelta(seconds=1))
    window = {
        "since": created.isoformat(),
        "until": (created + dt.timedelta(seconds=1)).isoformat(),
    }
    assert listed(admin, **window) == [run_id]
