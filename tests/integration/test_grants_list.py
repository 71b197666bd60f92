"""The grants lists read the automation chips of a whole page at once, and filter by chip while
paging (both databases).

Each grant of a page read its chip on its own (its latest event, that event's runs, their
replays) and its identity and application: 259 statements for a page of 50, and `limit=500`
took 1.8 s at 300,000 grants. The `automation=` filter was applied to a page after it was read,
so a page came back short or empty while `next_cursor` said more existed. Here: the chips read
at once are the ones each grant gives alone, over a mix of states; a page of 50 costs the
statements of a page of 10; a filter whose few grants are old fills the first page, and paging
gives each match once. A filter that matched few grants, or none, read every grant in one
request (100,000 in 20 s): here a request reads at most its bound, and the API's cursors, the
console's next links and the CLI give each match once through short and empty pages."""

from __future__ import annotations

import datetime as dt
import html
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select, update

from grantflow.access import grant_lists, lifecycle
from grantflow.access.applications import ApplicationCreate, ApplicationKind, create_application
from grantflow.access.automation import Automation, automation, automations, may_have
from grantflow.access.grants import GrantCreate, create_grant, revoke_grant
from grantflow.access.identities import IdentityCreate, create_identity
from grantflow.access.models import EventRun, Grant, LifecycleEvent
from grantflow.auth.permissions import Role
from grantflow.config import Settings
from grantflow.engine.models import Run
from grantflow.store.base import new_id, utcnow
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.console import signed_in_client
from tests.support.engine import ACTOR, publish, queue
from tests.support.processes import grantflow_env, json_output, run_grantflow
from tests.support.statements import statements_on

WHO = "ada@example.com"


def access_workflow(app_id: str, trigger: str, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "application": app_id,
        "trigger": {"type": trigger},
        "steps": [{"id": "only", "type": "set", "config": {"values": {"done": True}}}],
    }


@pytest.fixture
def world(database: Database) -> dict[str, str]:
    """Ada; CRM (a grant workflow and a revoke workflow), Payroll (two grant workflows) and
    Wiki (none): the applications' ids by name, and Ada's (`ada`)."""
    made = {}
    with database.transaction() as session:
        person = IdentityCreate(email=WHO)
        made["ada"] = create_identity(session, ACTOR, queue(database), person).id
        for name in ("CRM", "Payroll", "Wiki"):
            data = ApplicationCreate(name=name, kind=ApplicationKind("saas"))
            made[name] = create_application(session, ACTOR, data).id
    publish(database, access_workflow(made["CRM"], "access_granted", "CRM grant"))
    publish(database, access_workflow(made["CRM"], "access_revoked", "CRM revoke"))
    publish(database, access_workflow(made["Payroll"], "access_granted", "Payroll accounts"))
    publish(database, access_workflow(made["Payroll"], "access_granted", "Payroll groups"))
    return made


def granted(db: Database, app: str, role: str) -> tuple[str, list[str]]:
    """A grant of Ada's made by the service: its id, and the runs it started (queued)."""
    with db.transaction() as session:
        data = GrantCreate(identity=WHO, application=app, role=role)
        grant = create_grant(session, ACTOR, queue(db), data)
        return grant.id, [r["id"] for r in automation(session, grant).runs]


def revoked(db: Database, grant_id: str) -> list[str]:
    """The runs the grant's revoke started."""
    with db.transaction() as session:
        grant = revoke_grant(session, ACTOR, queue(db), grant_id)
        return [r["id"] for r in automation(session, grant).runs]


def set_run(db: Database, run_id: str, status: str, reason: str | None = None) -> None:
    with db.transaction() as session:
        values = {"status": status, "waiting_reason": reason}
        session.execute(update(Run).where(Run.id == run_id).values(**values))


def row_of(record: Any) -> dict[str, Any]:
    return {c.key: getattr(record, c.key) for c in type(record).__table__.columns}


def replay(db: Database, run_id: str, status: str) -> str:
    """A replay of the run (a copy of its row, as a Replay makes one), in `status`."""
    with db.transaction() as session:
        row = row_of(session.get_one(Run, run_id))
        row.update(id=new_id(), replay_of=run_id, replay_mode="as_is", status=status)
        row.update(waiting_reason=None, created_at=utcnow())
        session.execute(insert(Run.__table__), [row])
        return str(row["id"])


def dated(db: Database, grant_id: str, seconds: int) -> None:
    """The grant's latest event moved to `seconds` after the one before it."""
    with db.transaction() as session:
        events = select(LifecycleEvent).where(LifecycleEvent.grant_id == grant_id)
        first, last = session.execute(events.order_by(LifecycleEvent.id)).scalars()
        last.created_at = first.created_at + dt.timedelta(seconds=seconds)


def test_a_page_reads_each_grants_own_chip(
    database: Database, world: dict[str, str], admin: httpx.Client
) -> None:
    """Over grants in every state (no event, no run and why, pending, synced, each cause of
    needs_attention, replays at two levels and past the walk's bound of ten, two workflows, a
    revoke, events at one time), the chips read for the page at once are the ones each grant
    gives alone; the condition the chip filter narrows grants with in SQL keeps every grant of
    its chip and leaves out failures fixed by a replay (at any level) or by a newer event; and
    the API's list shows what each grant's own page shows."""
    expected: dict[str, Automation] = {}
    with database.transaction() as session:  # no event at all: written around the service
        bare = Grant(
            identity_id=world["ada"],
            application_id=world["Wiki"],
            role="bare",
            status="active",
            granted_by="test",
        )
        session.add(bare)
        session.flush()
        expected[bare.id] = Automation.NONE
    wiki, _ = granted(database, "Wiki", "reader")  # no workflow: none, and why
    expected[wiki] = Automation.NONE
    queued, _ = granted(database, "CRM", "queued")
    expected[queued] = Automation.PENDING
    for role, status, reason, chip in (
        ("synced", "succeeded", None, Automation.SYNCED),
        ("failed", "failed", None, Automation.NEEDS_ATTENTION),
        ("timed_out", "timed_out", None, Automation.NEEDS_ATTENTION),
        ("cancelled", "cancelled", None, Automation.NEEDS_ATTENTION),
        ("paused", "paused", None, Automation.NEEDS_ATTENTION),
        ("approval", "waiting", "approval", Automation.NEEDS_ATTENTION),
        ("reauth", "waiting", "reauth", Automation.NEEDS_ATTENTION),
        ("escalated", "waiting", "escalated", Automation.NEEDS_ATTENTION),
        ("delay", "waiting", "delay", Automation.PENDING),
        ("retry", "waiting", "retry", Automation.PENDING),
        ("running", "running", None, Automation.PENDING),
    ):
        grant_id, (run_id,) = granted(database, "CRM", role)
        set_run(database, run_id, status, reason)
        expected[grant_id] = chip
    fixed, (run_id,) = granted(database, "CRM", "fixed")  # failed, replayed with success
    set_run(database, run_id, "failed")
    replay(database, run_id, "succeeded")
    expected[fixed] = Automation.SYNCED
    # failed; replayed twice (the newer one counts, and failed); that one replayed, queued
    chain, (run_id,) = granted(database, "CRM", "chain")
    set_run(database, run_id, "failed")
    replay(database, run_id, "succeeded")
    replay(database, replay(database, run_id, "failed"), "queued")
    expected[chain] = Automation.PENDING
    broke, (run_id,) = granted(database, "CRM", "broke")  # succeeded, replayed: failed
    set_run(database, run_id, "succeeded")
    replay(database, run_id, "failed")
    expected[broke] = Automation.NEEDS_ATTENTION
    for role, statuses, chip in (
        ("mixed", ("succeeded", "failed"), Automation.NEEDS_ATTENTION),
        ("busy", ("succeeded", "running"), Automation.PENDING),
        ("both", ("succeeded", "succeeded"), Automation.SYNCED),
    ):
        grant_id, run_ids = granted(database, "Payroll", role)
        for run_id, status in zip(run_ids, statuses, strict=True):
            set_run(database, run_id, status)
        expected[grant_id] = chip
    deep, (run_id,) = granted(database, "CRM", "deep")  # eleven replays: the tenth is shown
    set_run(database, run_id, "failed")
    for level in range(1, 12):
        run_id = replay(database, run_id, "failed" if level <= 10 else "succeeded")
    expected[deep] = Automation.NEEDS_ATTENTION
    gone, (run_id,) = granted(database, "CRM", "gone")  # failed, then revoked: the revoke's
    set_run(database, run_id, "failed")
    (run_id,) = revoked(database, gone)
    set_run(database, run_id, "succeeded")
    expected[gone] = Automation.SYNCED
    wiki_gone, _ = granted(database, "Wiki", "gone")
    assert revoked(database, wiki_gone) == []
    expected[wiki_gone] = Automation.NONE
    # failed, then revoked, both events at one time: the greater id (the revoke) is latest
    tied, (run_id,) = granted(database, "CRM", "tied")
    set_run(database, run_id, "failed")
    (run_id,) = revoked(database, tied)
    set_run(database, run_id, "succeeded")
    dated(database, tied, 0)
    expected[tied] = Automation.SYNCED
    # failed, then revoked, the revoke dated a second earlier: the failure is latest
    early, (run_id,) = granted(database, "CRM", "early")
    set_run(database, run_id, "failed")
    (run_id,) = revoked(database, early)
    set_run(database, run_id, "succeeded")
    dated(database, early, -1)
    expected[early] = Automation.NEEDS_ATTENTION
    twice, (run_id,) = granted(database, "CRM", "twice")  # failed, its replay too; fixed by
    set_run(database, run_id, "failed")  # the replay's replay
    replay(database, replay(database, run_id, "failed"), "succeeded")
    expected[twice] = Automation.SYNCED
    again, (run_id,) = granted(database, "CRM", "again")  # failed, replayed: failed; replayed
    set_run(database, run_id, "failed")  # again: succeeded, the newer replay counts
    replay(database, run_id, "failed")
    replay(database, run_id, "succeeded")
    expected[again] = Automation.SYNCED
    # failed; its replay failed, and that one's replay; a newer replay of the first succeeded
    branch, (run_id,) = granted(database, "CRM", "branch")
    set_run(database, run_id, "failed")
    replay(database, replay(database, run_id, "failed"), "failed")
    replay(database, run_id, "succeeded")
    expected[branch] = Automation.SYNCED
    # eleven replays, the tenth succeeded: shown; the eleventh failed, never shown
    tenth, (run_id,) = granted(database, "CRM", "tenth")
    set_run(database, run_id, "failed")
    for level in range(1, 12):
        run_id = replay(database, run_id, "succeeded" if level == 10 else "failed")
    expected[tenth] = Automation.SYNCED

    with database.transaction() as session:
        together = automations(session, list(expected))
        alone = {i: automation(session, session.get_one(Grant, i)) for i in expected}
    assert together == alone
    assert {i: chip.state for i, chip in together.items()} == expected
    for wanted in (Automation.NEEDS_ATTENTION, Automation.PENDING):
        with database.transaction() as session:
            candidates = set(session.execute(select(Grant.id).where(may_have(wanted))).scalars())
        having = {i for i, chip in expected.items() if chip == wanted}
        assert having <= candidates, wanted
        # failures fixed by a replay, a replay's replay, a newer replay, a newer event
        assert not {fixed, twice, again, branch, gone, tied} & candidates, wanted
    assert together[wiki].no_run_reason
    assert together[wiki_gone].no_run_reason
    assert len(together[chain].runs) == 1
    assert together[chain].runs[0]["status"] == "queued"

    listed = admin.get("/api/v1/grants", params={"limit": 500})
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert [i["id"] for i in items] == sorted(expected)
    for item in items:
        shown = admin.get(f"/api/v1/grants/{item['id']}").json()
        assert item["automation"] == shown["automation"]
        assert {k: item[k] for k in ("identity", "application")} == {
            k: shown[k] for k in ("identity", "application")
        }


def copies(db: Database, grant_id: str, count: int, failed: set[int]) -> list[str]:
    """`count` copies of a grant (its row, its latest event, that event's run and their link),
    newer than it, in id order: the runs of the copies numbered in `failed` failed, the others
    succeeded."""
    with db.transaction() as session:
        grant = session.get_one(Grant, grant_id)
        event = lifecycle.latest_event(session, grant_id)
        link = session.execute(select(EventRun).where(EventRun.grant_id == grant_id)).scalar_one()
        run = session.get_one(Run, link.run_id)
        rows: dict[Any, list[dict[str, Any]]] = {
            Grant: [],
            LifecycleEvent: [],
            Run: [],
            EventRun: [],
        }
        made = []
        for n in range(count):
            copy = {"grant_id": new_id(), "event_id": new_id(), "run_id": new_id()}
            made.append(copy["grant_id"])
            status = "failed" if n in failed else "succeeded"
            rows[Grant].append({**row_of(grant), "id": copy["grant_id"], "role": f"copy{n}"})
            rows[LifecycleEvent].append(
                {**row_of(event), "id": copy["event_id"], "grant_id": copy["grant_id"]}
            )
            rows[Run].append({**row_of(run), "id": copy["run_id"], "status": status})
            rows[EventRun].append({**row_of(link), **copy})
        for model, values in rows.items():
            session.execute(insert(model.__table__), values)
    return made


def pages(client: httpx.Client, params: dict[str, Any]) -> list[tuple[list[str], str | None]]:
    """Each page of the API's list, first to last: its grants' ids and its next_cursor."""
    seen: list[tuple[list[str], str | None]] = []
    cursor = None
    while not seen or cursor:
        answer = client.get(
            "/api/v1/grants", params={**params, **({"cursor": cursor} if cursor else {})}
        )
        assert answer.status_code == 200, answer.text
        cursor = answer.json()["next_cursor"]
        seen.append(([item["id"] for item in answer.json()["items"]], cursor))
    return seen


def every_page(client: httpx.Client, params: dict[str, Any]) -> list[str]:
    """The ids of every page of the API's list, first to last; each page but the last full."""
    seen: list[str] = []
    cursor = None
    while True:
        answer = client.get(
            "/api/v1/grants", params={**params, **({"cursor": cursor} if cursor else {})}
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        seen.extend(item["id"] for item in body["items"])
        cursor = body["next_cursor"]
        if not cursor:
            return seen
        assert len(body["items"]) == params["limit"], f"a short page before {len(seen)}"


def console_rows(page: httpx.Response) -> tuple[list[str], str | None]:
    """The grants a console list page shows, and its next page's link (None: the last)."""
    assert page.status_code == 200, page.text
    following = re.search(r'<a href="([^"]+)" rel="next"', page.text)
    ids = re.findall(r'href="/grants/([^"/?]+)"', page.text)
    return ids, html.unescape(following.group(1)) if following else None


OLD = (3, 150, 420, 499, 500, 611, 777)  # the copies whose run failed: few, all old


def test_a_chip_filter_fills_its_pages(
    database: Database,
    world: dict[str, str],
    api: Api,
    admin: httpx.Client,
    settings: Settings,
) -> None:
    """1,200 grants of which 7, all among the oldest two thirds, need attention: the API's
    first page of `automation=needs_attention` holds the 7 and no cursor; three a page, each
    comes once, in order, every page full but the last; the synced ones page through 200 a
    page, each once; the console's first page shows the 7 and no next page, and its pages of
    synced grants show each once."""
    template, (run_id,) = granted(database, "CRM", "template")
    set_run(database, run_id, "succeeded")
    made = copies(database, template, 1_200, set(OLD))
    wanted = [made[n] for n in OLD]
    synced = sorted({template, *made} - set(wanted))

    first = admin.get("/api/v1/grants", params={"automation": "needs_attention", "limit": 50})
    assert first.status_code == 200, first.text
    assert [item["id"] for item in first.json()["items"]] == wanted
    assert first.json()["next_cursor"] is None
    assert every_page(admin, {"automation": "needs_attention", "limit": 3}) == wanted
    assert every_page(admin, {"automation": "synced", "limit": 200}) == synced
    assert every_page(admin, {"automation": "pending", "limit": 50}) == []

    console, _ = signed_in_client(api.base_url, database, settings, "admin@example.com")
    with console:
        shown, following = console_rows(
            console.get("/grants", params={"automation": "needs_attention"})
        )
        assert (shown, following) == (wanted, None)
        seen: list[str] = []
        following = "/grants?automation=synced"
        while following:
            shown, following = console_rows(console.get(following))
            assert len(shown) == 50 or following is None
            seen += shown
    assert seen == synced


def test_a_page_of_50_costs_the_statements_of_a_page_of_10(
    database: Database,
    world: dict[str, str],
    api: Api,
    admin: httpx.Client,
    settings: Settings,
) -> None:
    """60 grants, the oldest and the newest each with a failed run replayed (a level of
    replays on every page): the API's page of 50 sends as many statements as its page of 10,
    and the console's first page (50 grants) as many as its second (10). The statements
    grow with the depth of the replays on a page (at most ten levels), never with its size."""
    oldest, (run_id,) = granted(database, "CRM", "oldest")
    set_run(database, run_id, "failed")
    replay(database, run_id, "succeeded")
    made = copies(database, oldest, 59, {58})
    with database.transaction() as session:
        newest_run = session.execute(
            select(EventRun.run_id).where(EventRun.grant_id == made[-1])
        ).scalar_one()
    replay(database, newest_run, "succeeded")

    def sent(get: Any) -> tuple[int, httpx.Response]:
        get()  # (what a client's first request does once, as a session's first use, is not
        # the page's)
        with statements_on(database) as statements:
            answer = get()
        assert answer.status_code == 200, answer.text
        return len(statements), answer

    ten, page = sent(lambda: admin.get("/api/v1/grants", params={"limit": 10}))
    assert len(page.json()["items"]) == 10
    fifty, page = sent(lambda: admin.get("/api/v1/grants", params={"limit": 50}))
    assert len(page.json()["items"]) == 50
    assert fifty == ten, f"{ten} statements for a page of 10, {fifty} for 50"
    assert fifty <= 15

    console, _ = signed_in_client(api.base_url, database, settings, "admin@example.com")
    with console:
        first, page = sent(lambda: console.get("/grants"))
        shown, following = console_rows(page)
        assert len(shown) == 50
        assert following
        second, page = sent(lambda: console.get(following))
        assert len(console_rows(page)[0]) == 10
    assert first == second, f"{first} statements for a page of 50, {second} for 10"


def test_matches_ending_on_a_page_end_it(
    database: Database, world: dict[str, str], admin: httpx.Client
) -> None:
    """12 grants, 6 failed and 6 synced: three a page, either chip gives a full page with a
    cursor, then a full page without one (the grants were read to the end): no empty page."""
    template, (run_id,) = granted(database, "CRM", "template")
    set_run(database, run_id, "succeeded")
    made = copies(database, template, 11, {0, 2, 4, 6, 8, 10})
    failed = made[0::2]
    for chip, having in (("needs_attention", failed), ("synced", [template, *made[1::2]])):
        (first, cursor), (second, last) = pages(admin, {"automation": chip, "limit": 3})
        assert (first + second, last) == (having, None), chip
        assert len(first) == 3
        assert cursor


SYNCED_AT = (5, 60, 61, 62, 63, 64, 170)  # the copies whose run succeeded: few, far apart
BOUND = 40


def test_a_filtered_request_reads_a_bounded_number_of_grants(
    database: Database,
    world: dict[str, str],
    api: Api,
    admin: httpx.Client,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """With the bound at 40 grants a request, among 201 grants of which 7 are synced (far
    apart, five together): no request for three synced grants reads more than 40 (or the page
    and one, when more); pages come back short or empty with a cursor, and following the
    cursors gives each synced grant once, in order, until a page without one. The console's
    next links and `grantflow grants list --automation synced` (a CLI following the cursors
    through empty pages) give each once too."""
    monkeypatch.setattr(grant_lists, "MOST_READ", BOUND)
    read: list[int] = []  # the grants each batch read the chips of
    chips_of = grant_lists.automations

    def counted(session: Any, grant_ids: Any) -> Any:
        read.append(len(grant_ids))
        return chips_of(session, grant_ids)

    monkeypatch.setattr(grant_lists, "automations", counted)
    template, (run_id,) = granted(database, "CRM", "template")
    set_run(database, run_id, "failed")
    made = copies(database, template, 200, set(range(200)) - set(SYNCED_AT))
    wanted = [made[n] for n in SYNCED_AT]

    seen: list[tuple[list[str], str | None]] = []
    cursor = None
    while not seen or cursor:
        read.clear()
        params = {"automation": "synced", "limit": 3, **({"cursor": cursor} if cursor else {})}
        answer = admin.get("/api/v1/grants", params=params)
        assert answer.status_code == 200, answer.text
        assert sum(read) <= BOUND, read
        cursor = answer.json()["next_cursor"]
        seen.append(([item["id"] for item in answer.json()["items"]], cursor))
    assert [i for ids, _ in seen for i in ids] == wanted
    assert any(not ids and more for ids, more in seen)  # empty, with a cursor to read on
    assert any(0 < len(ids) < 3 and more for ids, more in seen)

    read.clear()  # a filtered page larger than the bound reads the page and one
    params = {"automation": "needs_attention", "limit": 50}
    assert len(admin.get("/api/v1/grants", params=params).json()["items"]) == 50
    assert sum(read) == 51

    console, _ = signed_in_client(api.base_url, database, settings, "admin@example.com")
    with console:
        shown: list[str] = []
        following: str | None = "/grants?automation=synced"
        empty = 0  # pages of 50 read 51 grants: the third finds none
        while following:
            page = console.get(following)
            rows, following = console_rows(page)
            shown += rows
            if not rows and following:
                assert "the next page reads on" in page.text
                empty += 1
            elif following and len(rows) < 50:
                assert "more that match may follow on the next page" in page.text
    assert shown == wanted
    assert empty

    token = api.user_token("viewer@example.com", Role.VIEWER)
    env = grantflow_env(url=api.base_url)
    env["GRANTFLOW_TOKEN"] = token
    command = ("grants", "list", "--automation", "synced", "--json")
    listed = json_output(run_grantflow(*command, "--limit", "10", env=env, cwd=tmp_path))
    assert [g["id"] for g in listed] == wanted
    first = json_output(run_grantflow(*command, "--limit", "6", env=env, cwd=tmp_path))
    assert [g["id"] for g in first] == wanted[:6]
