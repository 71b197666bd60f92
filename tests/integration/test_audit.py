"""The audit log: append-only in the database, tamper-evident, filterable over HTTP, secret-free."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError

from grantflow import audit
from grantflow.audit.models import AuditEntry
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Role
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.audit import entries, triggers_off, verify
from tests.support.plans import selects_on

audit_table = AuditEntry.__table__


def _create_app(client: httpx.Client, name: str, **body: object) -> str:
    response = client.post("/api/v1/applications", json={"name": name, **body})
    assert response.status_code == 201, response.text
    app_id: str = response.json()["id"]
    return app_id


def _entries(database: Database) -> list[AuditEntry]:
    return entries(database)


def _verify(database: Database) -> audit.ChainReport:
    return verify(database)


def _some_history(admin: httpx.Client) -> list[str]:
    """Three applications created and one updated, through the API."""
    ids = [_create_app(admin, name) for name in ("Wiki", "Payroll", "Chat")]
    assert admin.patch(f"/api/v1/applications/{ids[1]}", json={"kind": "internal"}).is_success
    return ids


# --- tamper evidence --------------------------------------------------------------------------


def test_untouched_chain_verifies(api: Api, admin: httpx.Client) -> None:
    """A log written only through the API verifies (in code and over HTTP), every entry checked."""
    _some_history(admin)
    entries = _entries(api.database)
    report = _verify(api.database)
    assert report.ok
    assert report.checked == len(entries)
    response = admin.get("/api/v1/audit/verify")
    assert response.status_code == 200
    assert response.json() == {
        "ok": True,
        "checked": len(entries),
        "first_broken_id": None,
        "reason": None,
        "legacy_entries": 0,
        "missing_triggers": [],
        "checkpoints_checked": 0,
    }


def test_numbers_jsonb_writes_otherwise_keep_the_chain_whole(api: Api, admin: httpx.Client) -> None:
    """PostgreSQL's jsonb gives 1e16 back as 10000000000000000 and -0.0 as 0.0: an attribute
    set to such a number broke the chain there (`verify`: its content does not match its
    hash). The entry is hashed as the database stores it, on both databases."""
    created = admin.post("/api/v1/identities", json={"email": "num@example.com"})
    assert created.status_code == 201, created.text
    numbers = {"big": 1e16, "huge": 1e300, "zero": -0.0, "small": 1.5e-7, "plain": 2.5}
    changed = admin.patch(
        f"/api/v1/identities/{created.json()['id']}", json={"attributes": numbers}
    )
    assert changed.status_code == 200, changed.text
    report = _verify(api.database)
    assert (report.ok, report.reason) == (True, None)
    with api.database.transaction() as session:
        updated = select(AuditEntry.summary).where(AuditEntry.action == "identity.updated")
        stored = json.dumps(session.execute(updated).scalar_one())
    assert "10000000000000000" in stored
    assert "-0.0" not in stored


def test_editing_a_summary_is_detected_at_that_entry(api: Api, admin: httpx.Client) -> None:
    """Changing one entry's summary with SQL makes verify name that entry, in code and over HTTP."""
    ids = _some_history(admin)
    entries = _entries(api.database)
    target = next(e for e in entries if e.target_id == ids[1] and e.action == "application.created")
    assert target.id != entries[-1].id
    with triggers_off(api.database) as session:
        session.execute(
            update(audit_table)
            .where(audit_table.c.id == target.id)
            .values(summary={**target.summary, "name": "Payroll (edited)"})
        )

    report = _verify(api.database)
    assert report.first_broken_id == target.id
    assert report.reason == "its content does not match its hash"
    response = admin.get("/api/v1/audit/verify")
    assert response.status_code == 200
    assert response.json() == {
        "ok": False,
        "checked": entries.index(target),
        "first_broken_id": target.id,
        "reason": "its content does not match its hash",
        "legacy_entries": 0,
        "missing_triggers": [],
        "checkpoints_checked": 0,
    }


def test_deleting_a_middle_entry_is_detected_at_the_next_one(api: Api, admin: httpx.Client) -> None:
    """Removing an entry from the middle breaks the link of the entry after it."""
    _some_history(admin)
    entries = _entries(api.database)
    middle = entries[len(entries) // 2]
    following = entries[len(entries) // 2 + 1]
    with triggers_off(api.database) as session:
        session.execute(delete(audit_table).where(audit_table.c.id == middle.id))

    report = _verify(api.database)
    assert report.first_broken_id == following.id
    assert report.reason is not None
    assert "prev_hash does not match" in report.reason
    body = admin.get("/api/v1/audit/verify").json()
    assert body["ok"] is False
    assert body["first_broken_id"] == following.id


@pytest.mark.parametrize("statement", ["update", "delete"])
def test_triggers_refuse_update_and_delete(api: Api, admin: httpx.Client, statement: str) -> None:
    """A plain UPDATE or DELETE on audit_entries fails in the database and changes nothing."""
    _some_history(admin)
    before = _entries(api.database)
    victim = before[1].id
    sql = (
        update(audit_table).where(audit_table.c.id == victim).values(actor="someone-else")
        if statement == "update"
        else delete(audit_table).where(audit_table.c.id == victim)
    )
    with pytest.raises(DBAPIError, match="append-only"), api.database.transaction() as session:
        session.execute(sql)
    after = _entries(api.database)
    assert [(e.id, e.actor, e.hash) for e in after] == [(e.id, e.actor, e.hash) for e in before]
    assert _verify(api.database).ok


# --- reading over HTTP ------------------------------------------------------------------------


def _list(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/api/v1/audit", params={"limit": 500, **params})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


@pytest.fixture
def history(api: Api, admin: httpx.Client) -> dict[str, Any]:
    """Changes by two actors: an admin (applications, a user) and an editor (one application)."""
    wiki = _create_app(admin, "Wiki")
    admin.patch(f"/api/v1/applications/{wiki}", json={"description": "Team wiki"})
    user = admin.post("/api/v1/users", json={"email": "eve@example.com", "roles": ["editor"]})
    assert user.status_code == 201
    with api.as_role(Role.EDITOR, "editor@example.com") as editor:
        chat = _create_app(editor, "Chat")
        editor_id = editor.get("/api/v1/me").json()["id"]
    return {"wiki": wiki, "chat": chat, "user": user.json()["id"], "editor_id": editor_id}


def test_filters_by_actor(admin: httpx.Client, history: dict[str, Any]) -> None:
    """actor matches the actor's email or user id, and nothing else."""
    by_email = _list(admin, actor="editor@example.com")
    assert [(e["action"], e["target_id"]) for e in by_email] == [
        ("application.created", history["chat"])
    ]
    assert _list(admin, actor=history["editor_id"]) == by_email
    admin_actions = [e["action"] for e in _list(admin, actor="admin@example.com")]
    assert admin_actions == ["user.created", "application.updated", "application.created"]
    assert _list(admin, actor="nobody@example.com") == []


def test_filters_by_action_exact_and_prefix(admin: httpx.Client, history: dict[str, Any]) -> None:
    """action matches exactly, or by prefix when it ends in `.*`; newest entry first."""
    created = _list(admin, action="application.created")
    assert [e["target_id"] for e in created] == [history["chat"], history["wiki"]]
    prefixed = _list(admin, action="application.*")
    assert [e["action"] for e in prefixed] == [
        "application.created",
        "application.updated",
        "application.created",
    ]
    assert _list(admin, action="application") == []
    assert _list(admin, action="applic.*") == []
    assert {e["action"] for e in _list(admin, action="user.*")} == {"user.created"}


def test_filters_by_target(admin: httpx.Client, history: dict[str, Any]) -> None:
    """target_type and target_id narrow the log to one kind of object, or one object."""
    users = _list(admin, target_type="user")
    assert {e["target_id"] for e in users} >= {history["user"], history["editor_id"]}
    assert {e["target_type"] for e in users} == {"user"}
    wiki = _list(admin, target_id=history["wiki"])
    assert [e["action"] for e in wiki] == ["application.updated", "application.created"]
    assert wiki[0]["summary"] == {"changes": {"description": ["", "Team wiki"]}}
    assert _list(admin, target_type="application", target_id=history["user"]) == []


def test_filters_by_time_window(admin: httpx.Client, history: dict[str, Any]) -> None:
    """since is inclusive and until exclusive, in any offset; a zone-less time is UTC."""
    everything = _list(admin)
    middle = everything[len(everything) // 2]
    at = dt.datetime.fromisoformat(middle["at"])

    def ids(entries: list[dict[str, Any]]) -> list[int]:
        return [e["id"] for e in entries]

    expected_since = [e for e in everything if dt.datetime.fromisoformat(e["at"]) >= at]
    expected_until = [e for e in everything if dt.datetime.fromisoformat(e["at"]) < at]
    assert expected_until
    assert ids(_list(admin, since=at.isoformat())) == ids(expected_since)
    assert ids(_list(admin, until=at.isoformat())) == ids(expected_until)
    plus_two_hours = at.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat()
    assert ids(_list(admin, since=plus_two_hours)) == ids(expected_since)
    naive_utc = at.astimezone(dt.UTC).replace(tzinfo=None).isoformat()
    assert ids(_list(admin, since=naive_utc)) == ids(expected_since)
    assert _list(admin, since=at.isoformat(), until=at.isoformat()) == []
    assert ids(
        _list(admin, since=at.isoformat(), until=(at + dt.timedelta(microseconds=1)).isoformat())
    ) == ids([e for e in expected_since if dt.datetime.fromisoformat(e["at"]) == at])


def test_pages_newest_first_with_a_cursor(admin: httpx.Client, history: dict[str, Any]) -> None:
    """Pages of two follow each other newest first, without gaps or overlap."""
    everything = _list(admin)
    assert [e["id"] for e in everything] == sorted((e["id"] for e in everything), reverse=True)
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        response = admin.get("/api/v1/audit", params=params)
        assert response.status_code == 200
        page = response.json()
        assert len(page["items"]) <= 2
        seen.extend(e["id"] for e in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [e["id"] for e in everything]
    filtered = admin.get("/api/v1/audit", params={"action": "application.*", "limit": 2}).json()
    rest = admin.get(
        "/api/v1/audit", params={"action": "application.*", "cursor": filtered["next_cursor"]}
    ).json()
    assert [e["action"] for e in filtered["items"] + rest["items"]] == [
        "application.created",
        "application.updated",
        "application.created",
    ]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday"}, "query.since"),
        ({"until": "2024-13-01T00:00:00Z"}, "query.until"),
        ({"limit": 0}, "query.limit"),
        ({"limit": 501}, "query.limit"),
    ],
)
def test_bad_query_values_are_422_naming_the_parameter(
    admin: httpx.Client, params: dict[str, Any], field: str
) -> None:
    """A time that is not ISO 8601, or a limit out of range, is a 422 naming the parameter."""
    response = admin.get("/api/v1/audit", params=params)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert [d["field"] for d in error["details"]] == [field]


@pytest.mark.parametrize("cursor", ["garbage!!", "eyJrIjogImEifQ", "bm90IGpzb24"])
def test_forged_cursor_is_400(admin: httpx.Client, cursor: str) -> None:
    """A cursor the API did not issue (not base64, wrong key type, not JSON) is a 400."""
    response = admin.get("/api/v1/audit", params={"cursor": cursor})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "bad_request"
    assert error["message"].startswith("cursor:")
    assert error["details"][0]["field"] == "query.cursor"


def test_viewer_cannot_read_the_audit_log(api: Api) -> None:
    """The audit log and its verification (GET and POST) need audit:read; a viewer gets 403
    naming it."""
    with api.as_role(Role.VIEWER) as viewer:
        for path in ("/api/v1/audit", "/api/v1/audit/verify"):
            response = viewer.get(path)
            assert response.status_code == 403
            assert response.json()["error"]["missing_permission"] == "audit:read"
        posted = viewer.post("/api/v1/audit/verify", json={"checkpoints": []})
        assert posted.status_code == 403
        assert posted.json()["error"]["missing_permission"] == "audit:read"
    with api.as_role(Role.AUDITOR) as auditor:
        assert auditor.get("/api/v1/audit").status_code == 200
        assert auditor.get("/api/v1/audit/verify").json()["ok"] is True


def test_no_secret_reaches_the_audit_log(api: Api, admin: httpx.Client) -> None:
    """Token plaintexts and passwords appear in no audit column, in the database or over HTTP."""
    password = "correct horse battery staple"
    user = admin.post(
        "/api/v1/users",
        json={"email": "svc@example.com", "roles": ["operator"], "password": password},
    )
    assert user.status_code == 201
    mine = admin.post("/api/v1/me/tokens", json={"name": "laptop"})
    theirs = admin.post(f"/api/v1/users/{user.json()['id']}/tokens", json={"name": "svc"})
    assert mine.status_code == theirs.status_code == 201
    secrets = [password, mine.json()["token"], theirs.json()["token"]]
    admin.post(f"/api/v1/tokens/{theirs.json()['id']}/revoke")

    with api.database.transaction() as session:
        rows = session.execute(text("SELECT * FROM audit_entries")).mappings().all()
    actions = {row["action"] for row in rows}
    assert {"user.created", "token.created", "token.revoked"} <= actions
    stored = json.dumps([dict(row) for row in rows], default=str)
    listed = admin.get("/api/v1/audit", params={"limit": 500}).text
    for secret in secrets:
        assert secret not in stored
        assert secret not in listed


def test_a_transaction_of_many_entries_reads_the_head_once_and_stays_a_chain(
    database: Database,
) -> None:
    """A transaction that records many entries (a campaign's revocations) locks and reads the
    chain's head once; a savepoint rolled back with its entry makes the next one read it again,
    and a later transaction reads it afresh: the chain verifies throughout."""
    actor = Actor.system("test")
    with selects_on(database, "audit_entries") as heads, database.transaction() as session:
        for n in range(5):
            audit.record(session, actor, "test.many", "test", None, {"n": n})
    assert len(heads) == 1, heads
    with selects_on(database, "audit_entries") as heads, database.transaction() as session:
        audit.record(session, actor, "test.before", "test", None, {})
        savepoint = session.begin_nested()
        audit.record(session, actor, "test.undone", "test", None, {})
        savepoint.rollback()
        audit.record(session, actor, "test.after", "test", None, {})
    assert len(heads) == 3, heads  # this transaction's first, in the savepoint, after it
    report = verify(database)
    assert report.ok, report
    assert [e.action for e in entries(database)][-3:] == ["test.many", "test.before", "test.after"]
