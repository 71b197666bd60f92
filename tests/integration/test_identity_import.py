"""CSV import of identities over the API: the per-row report, idempotent re-imports, dry runs,
file-level refusals (header, encoding, size), both body kinds, and the permission."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from grantflow.access.identity_imports import import_csv
from grantflow.access.models import Identity
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Role
from grantflow.queue.database import DatabaseQueue
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.connections import API, allowing_loopback, make_application, ok, serving_api

IMPORT = f"{API}/identities/import"

MIXED = """\
email,display_name,title,department,manager,start_date,end_date,active,attr.cost_center
Ada@Example.com,Ada Lovelace,Engineer,Research,grace@example.com,2025-01-06,,true,CC-1
grace@example.com,Grace Hopper,Director,Research,,2020-03-01,,yes,CC-0
not-an-email,Nobody,,,,,,,
carl@example.com,Carl,,,,2025-13-01,,,
dan@example.com,Dan,,,,2025-02-01,2025-01-31,,
eve@example.com,Eve,,,nobody@example.com,,,,
ADA@example.com,Ada Again,,,,,,,
fay@example.com,Fay,,,,,,maybe,
hal@example.com,Hal,Contractor,,,,,no,
"""


def post_csv(
    client: httpx.Client, text: str | bytes, *, dry_run: bool = False, multipart: bool = True
) -> httpx.Response:
    content = text.encode() if isinstance(text, str) else text
    params = {"dry_run": "true"} if dry_run else {}
    if multipart:
        return client.post(IMPORT, params=params, files={"file": ("people.csv", content)})
    return client.post(IMPORT, params=params, content=content, headers={"Content-Type": "text/csv"})


def by_row(report: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {r["row"]: r for r in report["results"]}


def audit_ids(admin: httpx.Client) -> list[int]:
    return [e["id"] for e in ok(admin.get(f"{API}/audit", params={"limit": 500}))["items"]]


def identities(admin: httpx.Client, **params: Any) -> dict[str, dict[str, Any]]:
    page = ok(admin.get(f"{API}/identities", params={"limit": 500, **params}))
    return {i["email"]: i for i in page["items"]}


def events(admin: httpx.Client, identity_id: str) -> list[str]:
    return [e["kind"] for e in ok(admin.get(f"{API}/identities/{identity_id}/events"))]


def test_good_rows_are_imported_and_each_bad_row_says_which_column_is_wrong(
    admin: httpx.Client,
) -> None:
    """Six kinds of bad row are rejected naming the column; the three good rows are created,
    the manager named by an earlier row being resolved from a later one."""
    report = ok(post_csv(admin, MIXED))
    assert report["dry_run"] is False
    assert report["filename"] == "people.csv"
    assert report["rows"] == 9
    assert report["counts"] == {"created": 3, "updated": 0, "unchanged": 0, "rejected": 6}
    rows = by_row(report)
    assert sorted(rows) == list(range(2, 11))  # the header is row 1
    assert {n: rows[n]["outcome"] for n in (2, 3, 10)} == {
        2: "created",
        3: "created",
        10: "created",
    }
    assert rows[2]["email"] == "ada@example.com"
    assert rows[2]["events"] == ["identity_joined"]
    assert rows[10]["events"] == []  # created inactive: a pre-hire does not join

    rejected = {n: rows[n] for n in (4, 5, 6, 7, 8, 9)}
    assert all(r["outcome"] == "rejected" and r["identity_id"] is None for r in rejected.values())
    assert [e["column"] for e in rows[4]["errors"]] == ["email"]
    assert rows[4]["email"] == "not-an-email"
    assert rows[4]["reason"].startswith("email: 'not-an-email' is not a valid email address")
    assert rows[5]["reason"] == (
        "start_date: '2025-13-01' is not a valid date; write dates as YYYY-MM-DD (2025-03-31)"
    )
    assert rows[6]["reason"] == "end_date: 2025-01-31 is before start_date 2025-02-01"
    assert rows[7]["reason"] == (
        "manager: no identity with id, email or userName 'nobody@example.com' (nor in this file)"
    )
    assert rows[8]["reason"] == (
        "email: ada@example.com already appears on row 2; a person appears once per file"
    )
    assert rows[9]["reason"] == "active: 'maybe' is not one of true, false, yes, no, 1, 0"

    people = identities(admin)
    assert set(people) == {"ada@example.com", "grace@example.com", "hal@example.com"}
    ada, grace, hal = (
        people["ada@example.com"],
        people["grace@example.com"],
        people["hal@example.com"],
    )
    assert ada["id"] == rows[2]["identity_id"]
    assert ada["manager_id"] == grace["id"]
    assert ada["display_name"] == "Ada Lovelace"
    assert ada["title"] == "Engineer"
    assert ada["start_date"] == "2025-01-06"
    assert ada["attributes"] == {"cost_center": "CC-1"}
    assert ada["source"] == "csv"
    assert ada["lifecycle_state"] == "active"
    assert (hal["active"], hal["lifecycle_state"]) == (False, "joiner")
    assert events(admin, ada["id"]) == ["identity_joined"]


def test_reimporting_the_same_file_changes_nothing(admin: httpx.Client) -> None:
    """The second import reports every good row unchanged and writes no audit entry and no
    lifecycle event; the first wrote one summary entry with the counts."""
    ok(post_csv(admin, MIXED))
    entries = ok(admin.get(f"{API}/audit", params={"action": "identity.imported"}))["items"]
    assert len(entries) == 1
    assert entries[0]["target_type"] == "identity"
    assert entries[0]["actor"] == "admin@example.com"
    summary = entries[0]["summary"]
    assert summary["filename"] == "people.csv"
    assert (summary["rows"], summary["created"], summary["rejected"]) == (9, 3, 6)
    assert len(summary["sha256"]) == 64
    created = ok(admin.get(f"{API}/audit", params={"action": "identity.created"}))["items"]
    assert len(created) == 3
    before = audit_ids(admin)
    ada = identities(admin)["ada@example.com"]

    again = ok(post_csv(admin, MIXED, multipart=False))
    assert again["counts"] == {"created": 0, "updated": 0, "unchanged": 3, "rejected": 6}
    assert all(r["changes"] == {} and r["events"] == [] for r in again["results"])
    assert by_row(again)[2]["identity_id"] == ada["id"]
    assert audit_ids(admin) == before
    assert events(admin, ada["id"]) == ["identity_joined"]
    assert identities(admin)["ada@example.com"]["updated_at"] == ada["updated_at"]


def test_changed_rows_report_their_changes_and_fire_moves_and_leaves(
    admin: httpx.Client,
) -> None:
    """An import that changes a title is a move; active=false offboards (the grant is revoked);
    a blank cell clears an optional field and removes an attribute; display_name blank keeps."""
    ok(
        post_csv(
            admin,
            "email,display_name,title,department,attr.badge,attr.floor\n"
            "ada@example.com,Ada,Engineer,Research,B1,3\n"
            "bob@example.com,Bob,Analyst,Finance,B2,4\n",
        )
    )
    make_application(admin, "Wiki")
    grant = ok(
        admin.post(f"{API}/grants", json={"identity": "bob@example.com", "application": "Wiki"}),
        201,
    )
    report = ok(
        post_csv(
            admin,
            "email,display_name,title,department,active,attr.badge\n"
            "ada@example.com,,Lead Engineer,,,\n"
            "bob@example.com,Bob,Analyst,Finance,false,B2\n",
        )
    )
    assert report["counts"] == {"created": 0, "updated": 2, "unchanged": 0, "rejected": 0}
    ada, bob = by_row(report)[2], by_row(report)[3]
    assert ada["changes"] == {
        "title": ["Engineer", "Lead Engineer"],
        "department": ["Research", None],
        "attr.badge": ["B1", None],
    }
    assert ada["events"] == ["identity_moved"]
    assert bob["changes"] == {"active": [True, False]}
    assert bob["events"] == ["access_revoked", "identity_left"]

    people = identities(admin)
    assert people["ada@example.com"]["display_name"] == "Ada"
    assert people["ada@example.com"]["attributes"] == {"floor": "3"}  # not in the file: kept
    assert people["ada@example.com"]["lifecycle_state"] == "active"
    assert (people["bob@example.com"]["active"], people["bob@example.com"]["lifecycle_state"]) == (
        False,
        "left",
    )
    revoked = ok(admin.get(f"{API}/grants/{grant['id']}"))
    assert (revoked["status"], revoked["revoke_reason"]) == ("revoked", "identity_left")
    updated = ok(admin.get(f"{API}/audit", params={"action": "identity.updated"}))["items"]
    assert {e["target_id"] for e in updated} == {
        people["ada@example.com"]["id"],
        bob["identity_id"],
    }


def test_a_dry_run_reports_and_writes_nothing(admin: httpx.Client) -> None:
    """A dry run reports what would happen (created rows have no id) and writes no identity,
    no audit entry, no event; the real import then does what the dry run said."""
    before = audit_ids(admin)
    dry = ok(post_csv(admin, MIXED, dry_run=True))
    assert dry["dry_run"] is True
    assert dry["counts"] == {"created": 3, "updated": 0, "unchanged": 0, "rejected": 6}
    assert by_row(dry)[2]["identity_id"] is None
    assert by_row(dry)[2]["events"] == ["identity_joined"]
    assert identities(admin) == {}
    assert audit_ids(admin) == before

    real = ok(post_csv(admin, MIXED))
    strip = [{k: v for k, v in r.items() if k != "identity_id"} for r in real["results"]]
    assert strip == [{k: v for k, v in r.items() if k != "identity_id"} for r in dry["results"]]

    changed = MIXED.replace("Engineer", "Lead")
    dry_update = ok(post_csv(admin, changed, dry_run=True))
    assert by_row(dry_update)[2]["changes"] == {"title": ["Engineer", "Lead"]}
    assert identities(admin)["ada@example.com"]["title"] == "Engineer"


def test_header_problems_refuse_the_whole_file(admin: httpx.Client) -> None:
    """Unknown, unnamed or repeated columns and a missing email column are a 422 naming them;
    nothing is imported."""
    unknown = post_csv(admin, "email,nickname,title,Shoe Size\nada@example.com,A,B,44\n")
    assert unknown.status_code == 422
    error = unknown.json()["error"]
    assert error["code"] == "csv_header_invalid"
    assert "unknown column 'nickname' (column 2)" in error["message"]
    assert "unknown column 'Shoe Size' (column 4)" in error["message"]
    assert {d["field"] for d in error["details"]} == {"header.nickname", "header.Shoe Size"}
    assert "attr.<name>" in error["next_action"]

    no_email = post_csv(admin, "display_name,title\nAda,Engineer\n")
    assert no_email.status_code == 422
    assert "the required column 'email' is missing" in no_email.json()["error"]["message"]

    twice = post_csv(admin, "email,Title,title,,attr.\nada@example.com,a,b,,x\n")
    message = twice.json()["error"]["message"]
    assert twice.status_code == 422
    assert "column 'title' appears twice (columns 2 and 3)" in message
    assert "column 4 has no name" in message
    assert "column 5 'attr.' names no attribute" in message

    empty = post_csv(admin, b"")
    assert empty.status_code == 422
    assert "the file is empty" in empty.json()["error"]["message"]
    assert identities(admin) == {}


def test_a_bom_is_accepted_and_a_file_that_is_not_utf8_is_refused(admin: httpx.Client) -> None:
    """UTF-8 with a BOM (Excel's 'CSV UTF-8') imports; Latin-1 bytes are a 422 saying so."""
    bom = "\ufeffemail,display_name\nzoe@example.com,Zoë Ångström\n".encode()
    report = ok(post_csv(admin, bom))
    assert report["counts"]["created"] == 1
    assert identities(admin)["zoe@example.com"]["display_name"] == "Zoë Ångström"

    latin1 = "email,display_name\nzoe@example.com,Zoë\n".encode("latin-1")
    refused = post_csv(admin, latin1, multipart=False)
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["code"] == "csv_not_utf8"
    assert (
        error["message"] == "file: the file is not UTF-8 (byte 0xeb on line 2 is not valid UTF-8)"
    )
    assert "UTF-8" in error["next_action"]


def test_multipart_and_text_csv_bodies_and_nothing_else(admin: httpx.Client) -> None:
    """The file comes as a multipart field `file` or as a text/csv body; JSON is a 415, a
    multipart body without `file` a 422."""
    assert ok(post_csv(admin, "email\na@example.com\n", multipart=True))["counts"]["created"] == 1
    text = post_csv(admin, "email\nb@example.com\n", multipart=False)
    assert ok(text)["filename"] is None
    assert ok(text)["counts"]["created"] == 1

    as_json = admin.post(IMPORT, json={"email": "c@example.com"})
    assert as_json.status_code == 415
    assert "multipart/form-data field named 'file'" in as_json.json()["error"]["message"]
    wrong_field = admin.post(IMPORT, files={"upload": ("p.csv", b"email\nc@example.com\n")})
    assert wrong_field.status_code == 422
    assert wrong_field.json()["error"]["message"] == (
        "file: the multipart body has no file field named 'file'"
    )
    plain = admin.post(IMPORT, content=b"email\n", headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415
    assert set(identities(admin)) == {"a@example.com", "b@example.com"}


def test_importing_needs_identity_write(api: Api, admin: httpx.Client) -> None:
    """A viewer gets 403 naming identity:write (and can still read); an operator may import."""
    with api.as_role(Role.VIEWER) as viewer:
        refused = post_csv(viewer, "email\nv@example.com\n")
        assert refused.status_code == 403
        assert refused.json()["error"]["missing_permission"] == "identity:write"
        assert "identity:write" in refused.json()["error"]["message"]
        assert ok(viewer.get(f"{API}/identities"))["items"] == []
    with api.client() as anonymous:
        assert post_csv(anonymous, "email\nv@example.com\n").status_code == 401
    with api.as_role(Role.OPERATOR) as operator:
        assert ok(post_csv(operator, "email\no@example.com\n"))["counts"]["created"] == 1
    assert set(identities(admin)) == {"o@example.com"}


def test_too_many_rows_or_bytes_is_a_413(
    admin: httpx.Client, database: Database, tmp_path: Path
) -> None:
    """More than 10,000 rows is refused before anything is written; so is a file larger than
    GRANTFLOW_EVIDENCE_MAX_BYTES."""
    rows = "".join(f"p{n}@example.com\n" for n in range(10_001))
    refused = post_csv(admin, "email\n" + rows, multipart=False)
    assert refused.status_code == 413
    error = refused.json()["error"]
    assert error["code"] == "too_many_rows"
    assert "more than 10000 rows" in error["message"]
    assert identities(admin) == {}

    settings = allowing_loopback(database, tmp_path, evidence_max_bytes=2048)
    with serving_api(settings, database) as small, small.as_role(Role.ADMIN, "big@x.io") as client:
        big = "email,display_name\n" + "".join(f"q{n}@example.com,Q\n" for n in range(200))
        for multipart in (True, False):
            response = post_csv(client, big, multipart=multipart)
            assert response.status_code == 413, response.text
            assert "2048 bytes" in response.json()["error"]["message"]
            assert "GRANTFLOW_EVIDENCE_MAX_BYTES" in response.json()["error"]["next_action"]


def test_managers_are_resolved_across_the_file_and_cycles_are_refused(
    admin: httpx.Client,
) -> None:
    """A chain of managers written bottom-up imports; a row naming itself or a loop of
    managers is rejected; a manager by id or userName of an existing identity works."""
    boss = ok(admin.post(f"{API}/identities", json={"email": "boss@example.com"}), 201)
    report = ok(
        post_csv(
            admin,
            "email,user_name,manager\n"
            "a@example.com,,b@example.com\n"
            "b@example.com,,c-user\n"
            f"c@example.com,c-user,{boss['id']}\n"
            "self@example.com,,SELF@example.com\n"
            "x@example.com,,y@example.com\n"
            "y@example.com,,x@example.com\n"
            "z@example.com,,x@example.com\n",
        )
    )
    rows = by_row(report)
    assert [rows[n]["outcome"] for n in (2, 3, 4)] == ["created"] * 3
    people = identities(admin)
    assert people["a@example.com"]["manager_id"] == people["b@example.com"]["id"]
    assert people["b@example.com"]["manager_id"] == people["c@example.com"]["id"]
    assert people["c@example.com"]["manager_id"] == boss["id"]
    assert rows[5]["reason"] == "manager: is the identity itself"
    assert rows[6]["reason"] == (
        "manager: the managers in this file form a cycle (row 6 -> row 7 -> row 6)"
    )
    assert rows[7]["reason"] == (
        "manager: the managers in this file form a cycle (row 7 -> row 6 -> row 7)"
    )
    assert rows[8]["reason"] == (
        "manager: 'x@example.com' is row 6, which was rejected, and no such identity exists yet"
    )


def test_rows_are_numbered_as_in_the_file(admin: httpx.Client) -> None:
    """Blank lines are skipped but counted; a quoted cell may hold a comma or a newline; a row
    with more cells than the header is rejected; semicolon files are read too."""
    report = ok(
        post_csv(
            admin,
            'email,title\n\na@example.com,"Head, Research"\n'
            'b@example.com,"two\nlines"\nc@example.com,x,extra\n',
        )
    )
    rows = by_row(report)
    assert sorted(rows) == [3, 4, 5]
    assert rows[5]["reason"] == "the row has 3 cells but the header has 2 columns"
    assert identities(admin)["a@example.com"]["title"] == "Head, Research"
    assert identities(admin)["b@example.com"]["title"] == "two\nlines"

    semicolons = ok(post_csv(admin, "email;title\nd@example.com;Lead\n"))
    assert semicolons["counts"]["created"] == 1
    assert identities(admin)["d@example.com"]["title"] == "Lead"

    broken = post_csv(admin, 'email,title\ne@example.com,"unterminated\n')
    assert broken.status_code == 422
    assert broken.json()["error"]["code"] == "csv_malformed"
    assert "row 2 is not valid CSV" in broken.json()["error"]["message"]


def test_a_clash_with_an_existing_user_name_rejects_only_that_row(admin: httpx.Client) -> None:
    """The service's own checks (a userName used by another identity, an end date before the
    stored start date) reject the row with the column named, in its own savepoint."""
    ok(admin.post(f"{API}/identities", json={"email": "old@example.com", "user_name": "ada"}), 201)
    ok(
        admin.post(
            f"{API}/identities", json={"email": "kim@example.com", "start_date": "2025-05-01"}
        ),
        201,
    )
    report = ok(
        post_csv(
            admin,
            "email,user_name,end_date\n"
            "ada@example.com,ada,\n"
            "kim@example.com,,2025-04-01\n"
            "lee@example.com,,\n",
        )
    )
    rows = by_row(report)
    assert rows[2]["errors"][0]["column"] == "user_name"
    assert "an identity with user_name 'ada' already exists" in rows[2]["reason"]
    assert rows[3]["reason"] == "end_date: must not be before start_date"
    assert rows[4]["outcome"] == "created"
    assert identities(admin)["kim@example.com"]["end_date"] is None
    assert "ada@example.com" not in identities(admin)


def test_batches_keep_the_managers_first_order(database: Database) -> None:
    """The rows are written in transactions of a few rows; a manager named by an earlier row
    in another batch is still written first."""
    lines = ["email,manager"] + [f"p{n}@example.com,p{n + 1}@example.com" for n in range(6)]
    lines.append("p6@example.com,")
    content = ("\n".join(lines) + "\n").encode()
    actor = Actor.system("test")
    queue = DatabaseQueue(database)
    report = import_csv(database, actor, queue, content, batch_rows=2)
    assert report.counts.created == 7
    ids = {r.email: r.identity_id for r in report.results}
    again = import_csv(database, actor, queue, content, batch_rows=3)
    assert again.counts.unchanged == 7
    with database.transaction() as session:
        rows = session.execute(select(Identity.email, Identity.manager_id))
        managers = dict(rows.all())
    assert managers["p0@example.com"] == ids["p1@example.com"]
    assert managers["p5@example.com"] == ids["p6@example.com"]
    assert managers["p6@example.com"] is None
