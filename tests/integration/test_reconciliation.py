"""Reconciliation against a real scim2-server target, through the real app over HTTP and the
real `grantflow reconcile` command: orphans (leavers flagged), duplicates, missing accounts,
mismatches, the stored report, its CSV, failed reports, refusals and permissions."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from grantflow.access.models import ReconciliationReport
from grantflow.access.reconcile import CSV_COLUMNS, report_csv
from grantflow.access.reconcile_compare import Directory, GrantRef, Person, compare
from grantflow.access.reconcile_target import Account
from grantflow.auth.permissions import Role
from grantflow.config import Settings
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.connections import (
    API,
    allowing_loopback,
    make_application,
    make_connection,
    ok,
    put_credential,
    serving_api,
)
from tests.support.processes import grantflow_env, json_output, run_grantflow
from tests.support.scim_server import TOKEN, ScimServer, Tenant, running_scim_server
from tests.support.services import free_port

APP = "Acme CRM"


@pytest.fixture(scope="module")
def scim_server() -> Iterator[ScimServer]:
    with running_scim_server() as server:
        yield server


@dataclass
class World:
    """The app over HTTP (allowed to reach 127.0.0.1), an admin, and a fresh SCIM tenant."""

    api: Api
    admin: httpx.Client
    settings: Settings
    tenant: Tenant
    tmp_path: Path

    def app(self, name: str = APP) -> str:
        return make_application(self.admin, name)

    def scim_connection(
        self, app_id: str, url: str | None = None, name: str = "directory", token: str = TOKEN
    ) -> dict[str, Any]:
        created = make_connection(
            self.admin,
            app_id,
            url or self.tenant.url,
            name=name,
            kind="scim",
            auth_kind="bearer",
        )
        put_credential(self.admin, created["id"], {"token": token})
        return created

    def person(self, email: str, **fields: Any) -> dict[str, Any]:
        body = {"email": email, "display_name": email.split("@")[0].title(), **fields}
        created: dict[str, Any] = ok(self.admin.post(f"{API}/identities", json=body), 201)
        return created

    def grant(self, identity: dict[str, Any], app: str = APP) -> dict[str, Any]:
        body = {"identity": identity["id"], "application": app}
        created: dict[str, Any] = ok(self.admin.post(f"{API}/grants", json=body), 201)
        return created

    def account(self, user_name: str, *emails: str, **attributes: Any) -> str:
        payload: dict[str, Any] = {"userName": user_name, "active": True, **attributes}
        if emails:
            payload["emails"] = [
                {"value": e, "type": "work", "primary": n == 0} for n, e in enumerate(emails)
            ]
        return str(self.tenant.create("User", payload).id)

    def reconcile(self, app_id: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return self.admin.post(f"{API}/applications/{app_id}/reconcile", json=body)

    def cli(self, *args: str) -> Any:
        env = grantflow_env(
            database_url=self.api.database.url.render_as_string(hide_password=False),
            secret_key=self.settings.secret_key.get_secret_value()
            if self.settings.secret_key
            else "",
            secret_key_file=self.tmp_path / "unused.key",
        )
        return run_grantflow(*args, env=env, cwd=self.tmp_path)


@contextmanager
def _world(
    database: Database, tmp_path: Path, scim_server: ScimServer, **overrides: Any
) -> Iterator[World]:
    settings = allowing_loopback(database, tmp_path, **overrides)
    with (
        serving_api(settings, database) as api,
        api.as_role(Role.ADMIN, "admin@example.com") as admin,
    ):
        yield World(api, admin, settings, scim_server.tenant(), tmp_path)


@pytest.fixture
def world(database: Database, tmp_path: Path, scim_server: ScimServer) -> Iterator[World]:
    with _world(database, tmp_path, scim_server) as made:
        yield made


def by_key(items: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Items keyed by (kind, the account's userName or else the identity's email)."""
    keyed = {(i["kind"], i["user_name"] or i["identity_email"]): i for i in items}
    assert len(keyed) == len(items), items
    return keyed


# --- the report ------------------------------------------------------------------------------


@dataclass
class Seeded:
    app_id: str
    people: dict[str, dict[str, Any]]
    grants: dict[str, dict[str, Any]]
    accounts: dict[str, str]


def seed(world: World) -> Seeded:
    """One of each case: in sync (by userName and by email), a duplicate, orphans with and
    without an identity, two leavers (one left, one deleted), a missing account, mismatches."""
    app_id = world.app()
    world.scim_connection(app_id)
    people: dict[str, dict[str, Any]] = {}
    grants: dict[str, dict[str, Any]] = {}
    accounts: dict[str, str] = {}

    def granted(key: str, email: str, **fields: Any) -> None:
        people[key] = world.person(email, **fields)
        grants[key] = world.grant(people[key])

    granted("ada", "ada@example.com", display_name="Ada Lovelace")
    accounts["ada"] = world.account(
        "ada@example.com", "ada@example.com", displayName="Ada Lovelace"
    )
    accounts["ada2"] = world.account("ada.lovelace", "ada@example.com", displayName="Ada L")
    accounts["mallory"] = world.account("mallory@example.com", "mallory@example.com")
    people["eve"] = world.person("eve@example.com")  # active, never granted
    accounts["eve"] = world.account("EVE@example.com", displayName="Eve")
    granted("bob", "bob@example.com")
    accounts["bob"] = world.account("bob@example.com", "bob@example.com", displayName="Bob")
    granted("carol", "carol@example.com")  # no account
    granted("dave", "dave@example.com")
    accounts["dave"] = world.account(
        "dave@example.com", "dave@example.com", displayName="Dave", active=False
    )
    granted("erin", "erin@example.com")
    accounts["erin"] = world.account(
        "erin@example.com", "erin.old@example.com", displayName="Erin Old"
    )
    granted("frank", "frank@example.com", user_name="frank.w", display_name="Frank W")
    accounts["frank"] = world.account("fwilson", "frank@example.com", displayName="Frank W")
    granted("grace", "grace@example.com")
    accounts["grace"] = world.account(
        "g-0001", displayName="Grace", externalId=people["grace"]["id"]
    )
    granted("heidi", "heidi@example.com")
    accounts["heidi"] = world.account("hh", "heidi@example.com", displayName="Heidi")

    # bob leaves (which revokes his grant; no revoke workflow, so his account stays), and
    # heidi is deleted (her userName and email are freed, kept in her attributes)
    left = ok(world.admin.patch(f"{API}/identities/{people['bob']['id']}", json={"active": False}))
    assert left["lifecycle_state"] == "left"
    shown = ok(world.admin.get(f"{API}/grants/{grants['bob']['id']}"))
    assert (shown["status"], shown["revoke_reason"]) == ("revoked", "identity_left")
    deleted = ok(world.admin.delete(f"{API}/identities/{people['heidi']['id']}"))
    assert deleted["email"] is None
    assert deleted["attributes"]["deleted_email"] == "heidi@example.com"
    return Seeded(app_id, people, grants, accounts)


EXPECTED_COUNTS = {
    "accounts": 10,
    "matched": 5,  # ada, dave, erin, frank, grace
    "in_sync": 2,  # ada, frank
    "mismatches": 3,  # dave, erin, grace
    "orphans": 4,  # mallory, eve, bob, heidi
    "leaver_orphans": 2,  # bob, heidi
    "duplicates": 1,  # ada's second account
    "missing": 1,  # carol
    "active_grants": 6,
    "granted_identities": 6,
}


def test_report_names_orphans_leavers_duplicates_missing_and_mismatches(world: World) -> None:
    """Every account is read (4 pages of 3), matched by userName, email, externalId or a
    deleted identity's old keys, and each finding names the account, the person and why."""
    seeded = seed(world)
    report = ok(world.reconcile(seeded.app_id, {"page_size": 3}), 201)
    assert report["status"] == "completed"
    assert report["error"] is None
    assert report["summary"] == EXPECTED_COUNTS
    assert report["pages"] == 4
    assert report["application"] == {"id": seeded.app_id, "name": APP}
    assert report["connection"]["name"] == "directory"
    assert report["created_by"] == "admin@example.com"
    items = by_key(report["items"])
    assert len(items) == 9
    people, accounts, grants = seeded.people, seeded.accounts, seeded.grants

    # the dangerous ones first: people who left and still have an active account
    assert [i["severity"] for i in report["items"][:2]] == ["high", "high"]
    bob = items["orphan", "bob@example.com"]
    assert bob["account_id"] == accounts["bob"]
    assert (bob["identity_id"], bob["identity_state"], bob["leaver"]) == (
        people["bob"]["id"],
        "left",
        True,
    )
    assert bob["matched_by"] == "userName"
    assert bob["grant_id"] is None
    assert bob["detail"] == (
        "bob@example.com has left and has no active grant; the account is still active: "
        "remove or deactivate it in the target"
    )
    heidi = items["orphan", "hh"]
    assert (heidi["identity_id"], heidi["identity_state"], heidi["leaver"]) == (
        people["heidi"]["id"],
        "deleted",
        True,
    )
    assert heidi["matched_by"] == "email"  # her old email, kept after deletion
    assert heidi["identity_email"] == "heidi@example.com"
    assert heidi["severity"] == "high"
    assert "was deleted" in heidi["detail"]

    mallory = items["orphan", "mallory@example.com"]
    assert (mallory["identity_id"], mallory["leaver"], mallory["severity"]) == (
        None,
        False,
        "medium",
    )
    assert "no identity matches this account" in mallory["detail"]
    eve = items["orphan", "EVE@example.com"]  # userName matched case-insensitively
    assert (eve["identity_id"], eve["identity_state"], eve["leaver"]) == (
        people["eve"]["id"],
        "active",
        False,
    )
    assert "eve@example.com has no active grant for this application" in eve["detail"]

    duplicate = items["duplicate", "ada.lovelace"]
    assert duplicate["identity_id"] == people["ada"]["id"]
    assert duplicate["matched_account_id"] == accounts["ada"]  # the userName match won
    assert duplicate["grant_id"] == grants["ada"]["id"]

    carol = items["missing", "carol@example.com"]
    assert (carol["account_id"], carol["identity_id"], carol["grant_id"]) == (
        None,
        people["carol"]["id"],
        grants["carol"]["id"],
    )
    assert "has an active grant but no account in the target" in carol["detail"]

    dave = items["mismatch", "dave@example.com"]
    assert (dave["problems"], dave["account_active"], dave["grant_id"]) == (
        ["inactive"],
        False,
        grants["dave"]["id"],
    )
    assert dave["detail"] == "the account is deactivated (active=false)"
    erin = items["mismatch", "erin@example.com"]
    assert erin["problems"] == ["email", "display_name"]
    assert (
        "the account has email 'erin.old@example.com', the identity 'erin@example.com'"
        in (erin["detail"])
    )
    assert "displayName 'Erin Old', the identity 'Erin'" in erin["detail"]
    grace = items["mismatch", "g-0001"]
    assert (grace["matched_by"], grace["identity_id"]) == ("externalId", people["grace"]["id"])
    assert grace["problems"] == ["email"]
    assert "the account has no email" in grace["detail"]
    # in sync (ada by userName, frank by email) are counted, not listed
    assert not any(i["account_id"] in (accounts["ada"], accounts["frank"]) for i in items.values())

    # stored: the same report is read back, and listed
    assert ok(world.admin.get(f"{API}/reconciliations/{report['id']}")) == report
    listed = ok(world.admin.get(f"{API}/applications/{seeded.app_id}/reconciliations"))
    assert [r["id"] for r in listed["items"]] == [report["id"]]
    assert "items" not in listed["items"][0]
    assert listed["items"][0]["summary"] == EXPECTED_COUNTS

    # the CSV: one row per finding, the documented columns
    download = world.admin.get(f"{API}/reconciliations/{report['id']}/csv")
    assert download.status_code == 200, download.text
    assert download.headers["content-type"].startswith("text/csv")
    assert "attachment" in download.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 9
    by_row = {(r["kind"], r["user_name"] or r["identity_email"]): r for r in rows}
    assert by_row["orphan", "bob@example.com"] == {
        "kind": "orphan",
        "account_id": accounts["bob"],
        "user_name": "bob@example.com",
        "email": "bob@example.com",
        "identity_id": people["bob"]["id"],
        "identity_email": "bob@example.com",
        "identity_state": "left",
        "grant_id": "",
        "detail": bob["detail"],
    }
    assert by_row["missing", "carol@example.com"]["account_id"] == ""
    assert by_row["missing", "carol@example.com"]["grant_id"] == grants["carol"]["id"]
    assert by_row["mismatch", "dave@example.com"]["detail"] == dave["detail"]

    # the audit log has one entry for it
    entries = ok(world.admin.get(f"{API}/audit", params={"target_id": report["id"]}))["items"]
    assert [(e["action"], e["target_type"]) for e in entries] == [
        ("reconciliation.completed", "reconciliation")
    ]
    assert entries[0]["summary"]["counts"]["leaver_orphans"] == 2


def test_reports_are_listed_newest_first(world: World) -> None:
    """Each run stores a report; the list is newest first and pages with a cursor."""
    app_id = world.app()
    world.scim_connection(app_id)
    first = ok(world.reconcile(app_id), 201)
    world.account("zoe@example.com", "zoe@example.com")
    second = ok(world.reconcile(app_id), 201)
    assert (first["summary"]["accounts"], second["summary"]["accounts"]) == (0, 1)
    path = f"{API}/applications/{app_id}/reconciliations"
    listed = ok(world.admin.get(path))
    assert [r["id"] for r in listed["items"]] == [second["id"], first["id"]]
    page = ok(world.admin.get(path, params={"limit": 1}))
    assert [r["id"] for r in page["items"]] == [second["id"]]
    rest = ok(world.admin.get(path, params={"limit": 1, "cursor": page["next_cursor"]}))
    assert [r["id"] for r in rest["items"]] == [first["id"]]
    assert rest["next_cursor"] is None


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)  # (the service: both, above)
def test_cli_reconciles_prints_json_and_writes_the_csv(world: World) -> None:
    """`grantflow reconcile APP --json --csv FILE` stores the same report as the API would (the
    CLI's two processes on SQLite; the same service on PostgreSQL is the API's, above)."""
    seeded = seed(world)
    target = world.tmp_path / "findings.csv"
    result = world.cli("reconcile", APP, "--json", "--csv", str(target), "--page-size", "4")
    report = json_output(result)
    assert report["status"] == "completed"
    assert report["summary"] == EXPECTED_COUNTS
    assert report["pages"] == 3
    assert report["created_by"] == "system:cli"
    rows = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"))))
    assert len(rows) == 9
    assert {r["kind"] for r in rows} == {"orphan", "duplicate", "missing", "mismatch"}
    stored = ok(world.admin.get(f"{API}/reconciliations/{report['id']}"))
    assert stored["items"] == report["items"]

    table = world.cli("reconcile", seeded.app_id)
    assert table.returncode == 0, table.stderr
    assert "10 account(s): 5 matched (3 with mismatches), 4 orphan(s) (2 of people who left)" in (
        table.stdout
    )
    assert "1 missing account(s) for 6 active grant(s)" in table.stdout
    listed = ok(world.admin.get(f"{API}/applications/{seeded.app_id}/reconciliations"))
    assert len(listed["items"]) == 2


# --- failures: stored as failed reports, never a 500 ---------------------------------------


def _check_failed(world: World, app_id: str, report: dict[str, Any]) -> None:
    assert report["status"] == "failed"
    assert (report["summary"], report["items"], report["pages"]) == ({}, [], None)
    assert ok(world.admin.get(f"{API}/reconciliations/{report['id']}")) == report
    listed = ok(world.admin.get(f"{API}/applications/{app_id}/reconciliations"))
    assert [r["status"] for r in listed["items"]] == ["failed"]
    entries = ok(world.admin.get(f"{API}/audit", params={"target_id": report["id"]}))["items"]
    assert [e["action"] for e in entries] == ["reconciliation.failed"]
    assert entries[0]["summary"]["error"] == report["error"]
    download = world.admin.get(f"{API}/reconciliations/{report['id']}/csv")
    assert download.text.strip() == ",".join(CSV_COLUMNS)


def test_unreachable_target_gives_a_failed_report(world: World) -> None:
    """Nothing listens on the connection's port: 201, a failed report saying so."""
    app_id = world.app()
    world.scim_connection(app_id, url=f"http://127.0.0.1:{free_port()}/v2")
    report = ok(world.reconcile(app_id), 201)
    assert report["error"].startswith("could not reach 127.0.0.1: ConnectError")
    assert report["failure_class"] == "transient"
    assert report["next_action"] == "check that the target is up and reachable"
    _check_failed(world, app_id, report)

    result = world.cli("reconcile", APP)
    assert result.returncode == 1
    assert "FAILED: could not reach 127.0.0.1" in result.stderr
    assert "next: check that the target is up and reachable" in result.stderr


def test_refused_credential_gives_a_failed_report(world: World) -> None:
    """The target answers 401: the report says the credential was refused and what to do."""
    app_id = world.app()
    world.scim_connection(app_id, token="not-the-token")
    report = ok(world.reconcile(app_id), 201)
    assert "refused the credential (HTTP 401)" in report["error"]
    assert report["failure_class"] == "permanent"
    assert report["next_action"]
    assert "not-the-token" not in str(report)
    _check_failed(world, app_id, report)


def test_connection_without_credential_gives_a_failed_report(world: World) -> None:
    """A disconnected connection sends no request; the report says why."""
    app_id = world.app()
    make_connection(world.admin, app_id, world.tenant.url, kind="scim", auth_kind="bearer")
    report = ok(world.reconcile(app_id), 201)
    assert "connection 'crm' is disconnected" in report["error"]
    assert "no request was sent" in report["error"]
    _check_failed(world, app_id, report)


def test_the_outbound_guard_applies(
    database: Database, tmp_path: Path, scim_server: ScimServer
) -> None:
    """Without 127.0.0.1 allowlisted, the call is refused by the SSRF guard, not sent."""
    with _world(database, tmp_path, scim_server, outbound_allow="") as world:
        app_id = world.app()
        world.scim_connection(app_id)
        world.account("ada@example.com")
        report = ok(world.reconcile(app_id), 201)
        assert report["error"] == (
            "outbound call to 127.0.0.1 refused: 127.0.0.1 is a loopback address"
        )
        assert report["failure_class"] == "safety"
        assert "GRANTFLOW_OUTBOUND_ALLOW" in report["next_action"]
        _check_failed(world, app_id, report)


# --- refusals --------------------------------------------------------------------------------


def test_an_application_without_a_scim_connection_is_refused(world: World) -> None:
    """409 naming the problem and what to do; nothing is stored. The CLI says the same."""
    app_id = world.app()
    make_connection(world.admin, app_id, "http://127.0.0.1:9", name="crm")
    response = world.reconcile(app_id)
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "no_scim_connection"
    assert error["message"] == (
        "application 'Acme CRM' has no SCIM connection: reconciliation lists the accounts in "
        "the target over SCIM 2.0"
    )
    assert "add a connection of kind scim" in error["next_action"]
    named = world.reconcile(app_id, {"connection": "crm"})
    assert named.status_code == 409
    assert named.json()["error"]["code"] == "not_a_scim_connection"
    assert "is of kind http" in named.json()["error"]["message"]
    assert ok(world.admin.get(f"{API}/applications/{app_id}/reconciliations"))["items"] == []

    result = world.cli("reconcile", APP)
    assert result.returncode == 1
    assert "error: application 'Acme CRM' has no SCIM connection" in result.stderr
    assert "next: add a connection of kind scim" in result.stderr


def test_several_scim_connections_need_one_named(world: World) -> None:
    """Two SCIM connections: 409 listing them; naming one (by name or id) runs it."""
    app_id = world.app()
    world.scim_connection(app_id, name="primary")
    other = world.scim_connection(app_id, name="secondary")
    response = world.reconcile(app_id)
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "connection_ambiguous"
    assert "2 SCIM connections (primary, secondary)" in error["message"]
    by_name = ok(world.reconcile(app_id, {"connection": "primary"}), 201)
    assert by_name["connection"]["name"] == "primary"
    by_id = ok(world.reconcile(app_id, {"connection": other["id"]}), 201)
    assert by_id["connection"] == {
        "id": other["id"],
        "name": "secondary",
        "base_url": world.tenant.url,
    }
    missing = world.reconcile(app_id, {"connection": "nope"})
    assert missing.status_code == 404
    assert "has no connection 'nope'" in missing.json()["error"]["message"]
    assert "primary, secondary" in missing.json()["error"]["next_action"]


def test_unknown_application_and_report_are_404(world: World) -> None:
    assert world.reconcile("no-such-app").status_code == 404
    for path in ("reconciliations/nope", "reconciliations/nope/csv"):
        response = world.admin.get(f"{API}/{path}")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    bad_body = world.reconcile(world.app(), {"page_size": 0})
    assert bad_body.status_code == 422


def test_permissions(world: World) -> None:
    """Running needs access:reconcile (a viewer or an auditor is refused, an operator may);
    reading needs grant:read (an auditor can read the reports and the CSV)."""
    app_id = world.app()
    world.scim_connection(app_id)
    world.account("mallory@example.com")
    with (
        world.api.as_role(Role.VIEWER, "viewer@example.com") as viewer,
        world.api.as_role(Role.AUDITOR, "auditor@example.com") as auditor,
        world.api.as_role(Role.OPERATOR, "operator@example.com") as operator,
    ):
        for refused in (viewer, auditor):
            response = refused.post(f"{API}/applications/{app_id}/reconcile")
            assert response.status_code == 403, response.text
            error = response.json()["error"]
            assert error["missing_permission"] == "access:reconcile"
            assert "access:reconcile" in error["message"]
        report = ok(operator.post(f"{API}/applications/{app_id}/reconcile"), 201)
        assert report["created_by"] == "operator@example.com"
        assert report["summary"]["orphans"] == 1
        listed = ok(auditor.get(f"{API}/applications/{app_id}/reconciliations"))
        assert [r["id"] for r in listed["items"]] == [report["id"]]
        assert (
            ok(auditor.get(f"{API}/reconciliations/{report['id']}"))["items"] == (report["items"])
        )
        csv_download = auditor.get(f"{API}/reconciliations/{report['id']}/csv")
        assert csv_download.status_code == 200
        assert "mallory@example.com" in csv_download.text


def test_a_rehired_person_matches_the_new_identity(world: World) -> None:
    """A deleted identity's old keys match only when no live identity has them."""
    app_id = world.app()
    world.scim_connection(app_id)
    first = world.person("heidi@example.com")
    world.grant(first)
    ok(world.admin.delete(f"{API}/identities/{first['id']}"))
    account = world.account("heidi@example.com", "heidi@example.com", displayName="Heidi")
    left = ok(world.reconcile(app_id), 201)
    (orphan,) = left["items"]
    assert (orphan["identity_id"], orphan["identity_state"]) == (first["id"], "deleted")

    again = world.person("heidi@example.com")
    grant = world.grant(again)
    report = ok(world.reconcile(app_id), 201)
    assert report["items"] == []
    assert report["summary"]["matched"] == report["summary"]["in_sync"] == 1
    assert (grant["identity"]["id"], account) == (again["id"], world.tenant.users()[0].id)


# --- the comparison alone (no database, no target) -------------------------------------------


def _directory(*people: Person) -> Directory:
    directory = Directory({}, {}, {})
    for person in people:
        directory.by_id[person.id] = person
        directory.by_user_name[person.user_name.lower()] = person
        if person.email:
            directory.by_email[person.email] = person
    return directory


def _account_of(account_id: str, user_name: str, *emails: str, **fields: Any) -> Account:
    values: dict[str, Any] = {"external_id": None, "display_name": "Ada", "active": True}
    values.update(fields)
    return Account(account_id, user_name, tuple(emails), **values)


ADA = Person("id-ada", "ada", "ada@example.com", "Ada", "active")
BOB = Person("id-bob", "bob", "bob@example.com", "Bob", "leaver")


def test_a_leavers_deactivated_account_is_flagged_but_not_high() -> None:
    """A leaver's account already deactivated is still an orphan and a leaver's, medium."""
    accounts = [_account_of("1", "bob", "bob@example.com", display_name="Bob", active=False)]
    result = compare(accounts, _directory(ADA, BOB), {})
    (item,) = result.items
    assert (item["kind"], item["leaver"], item["severity"]) == ("orphan", True, "medium")
    assert item["detail"] == (
        "bob@example.com is leaving (offboarding not finished) and has no active grant; the "
        "account is deactivated but still exists"
    )
    assert result.summary["leaver_orphans"] == 1


@pytest.mark.parametrize("order", [1, -1], ids=["listed-first", "listed-last"])
def test_the_strongest_match_claims_the_grant_whatever_the_order(order: int) -> None:
    """The userName match is the matched account, the email match the duplicate."""
    accounts = [
        _account_of("by-email", "a.lovelace", "ada@example.com"),
        _account_of("by-name", "ADA", "ada@example.com"),
    ][::order]
    result = compare(accounts, _directory(ADA), {"id-ada": [GrantRef("g1", "admin")]})
    (item,) = result.items
    assert (item["kind"], item["account_id"], item["matched_account_id"]) == (
        "duplicate",
        "by-email",
        "by-name",
    )
    assert item["roles"] == ["admin"]
    assert result.summary["in_sync"] == 1


def test_csv_cells_cannot_be_spreadsheet_formulas() -> None:
    """A value from the target starting like a formula is written as text."""
    report = ReconciliationReport(
        items=[{"kind": "orphan", "user_name": "=HYPERLINK(1)", "detail": "+x", "email": None}]
    )
    rows = list(csv.reader(io.StringIO(report_csv(report))))
    assert rows[1][:4] == ["orphan", "", "'=HYPERLINK(1)", ""]
    assert rows[1][-1] == "'+x"
