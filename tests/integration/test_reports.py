"""Reports over real HTTP, on SQLite and PostgreSQL: every kind in CSV and JSON with its exact
rows for a known inventory; the SHA-256 of the downloaded bytes; formula-injection escaping in
CSV; audit exports need audit:read; validation errors name the field; the report job through
Run now; the CLI."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Role
from grantflow.engine import operations
from grantflow.engine.models import Run
from grantflow.errors import ValidationError
from grantflow.governance.models import ReportChunk
from grantflow.queue.database import DatabaseQueue
from grantflow.schedules import jobs, scheduler
from grantflow.store.base import utcnow
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.engine import publish, start
from tests.support.processes import grantflow_env, json_output, run_grantflow

API = "/api/v1"
ACTOR = Actor.system("test")
ADMIN = "admin@example.com"
EVIL_NAME = '=HYPERLINK("http://evil.example","click")'


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    return response.json()


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    body: dict[str, Any] = response.json()["error"]
    return body


@dataclass
class Env:
    api: Api
    admin: httpx.Client

    @property
    def db(self) -> Database:
        return self.api.database

    def generate(
        self, kind: str, fmt: str, client: httpx.Client | None = None, **params: Any
    ) -> Any:
        body = {"kind": kind, "format": fmt, "params": params}
        return ok((client or self.admin).post(f"{API}/reports", json=body), 201)

    def download(self, report: dict[str, Any], client: httpx.Client | None = None) -> bytes:
        response = (client or self.admin).get(report["content_link"])
        assert response.status_code == 200, response.text
        digest = hashlib.sha256(response.content).hexdigest()
        assert response.headers["x-content-sha256"] == digest == report["sha256"]
        assert len(response.content) == report["size"]
        assert response.headers["content-type"] == report["content_type"]
        assert response.headers["content-disposition"] == (
            f'attachment; filename="{report["filename"]}"'
        )
        return response.content

    def rows(self, kind: str, fmt: str, **params: Any) -> list[dict[str, Any]]:
        """Generate a report; its rows as the downloaded file gives them (CSV: all strings)."""
        report = self.generate(kind, fmt, **params)
        content = self.download(report)
        if fmt == "csv":
            parsed = list(csv.DictReader(io.StringIO(content.decode("utf-8"), newline="")))
        else:
            document = json.loads(content)
            assert document["kind"] == kind
            assert document["row_count"] == len(document["rows"])
            assert all(list(r) == document["columns"] for r in document["rows"])
            parsed = document["rows"]
        assert report["rows"] == len(parsed)
        return parsed


@pytest.fixture
def env(api: Api) -> Iterator[Env]:
    with api.as_role(Role.ADMIN, ADMIN) as admin:
        yield Env(api, admin)


def as_csv(row: dict[str, Any]) -> dict[str, str]:
    """How a JSON row reads back from the CSV (formula-like text prefixed with ')."""

    def cell(value: Any) -> str:
        if value is None:
            return ""
        text = (
            json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            if isinstance(value, dict | list)
            else str(value)
        )
        return "'" + text if text[:1] in ("=", "+", "-", "@") else text

    return {key: cell(value) for key, value in row.items()}


# --- grants -----------------------------------------------------------------------------------


@dataclass
class Inventory:
    crm: dict[str, Any]
    wiki: dict[str, Any]
    ada: dict[str, Any]
    bob: dict[str, Any]
    ada_crm: dict[str, Any]
    ada_wiki: dict[str, Any]
    bob_crm: dict[str, Any]
    bob_wiki: dict[str, Any]  # revoked


def inventory(env: Env) -> Inventory:
    def app(name: str) -> dict[str, Any]:
        created: dict[str, Any] = ok(
            env.admin.post(f"{API}/applications", json={"name": name}), 201
        )
        return created

    def person(**fields: Any) -> dict[str, Any]:
        created: dict[str, Any] = ok(env.admin.post(f"{API}/identities", json=fields), 201)
        return created

    def grant(who: str, application: str, role: str = "") -> dict[str, Any]:
        body = {"identity": who, "application": application, "role": role}
        created: dict[str, Any] = ok(env.admin.post(f"{API}/grants", json=body), 201)
        return created

    crm, wiki = app("CRM"), app("Wiki")
    ada = person(email="ada@example.com", display_name="Ada Lovelace", department="Engineering")
    # a display name and a department written to be run by a spreadsheet
    bob = person(email="bob@example.com", display_name=EVIL_NAME, department="@SUM(A1:A9)")
    ada_crm = grant("ada@example.com", "CRM", "admin")
    ada_wiki = grant("ada@example.com", "Wiki")
    bob_crm = grant("bob@example.com", "CRM", "+editor")
    bob_wiki = grant("bob@example.com", "Wiki")
    bob_wiki = ok(env.admin.post(f"{API}/grants/{bob_wiki['id']}/revoke", json={"comment": "x"}))
    return Inventory(crm, wiki, ada, bob, ada_crm, ada_wiki, bob_crm, bob_wiki)


def grant_row(grant: dict[str, Any], person: dict[str, Any], app: dict[str, Any]) -> dict[str, Any]:
    return {
        "application": app["name"],
        "role": grant["role"],
        "identity": person["email"],
        "display_name": person["display_name"],
        "department": person["department"],
        "lifecycle_state": person["lifecycle_state"],
        "status": grant["status"],
        "granted_at": grant["granted_at"],
        "granted_by": grant["granted_by"],
        "expires_at": grant["expires_at"],
        "revoked_at": grant["revoked_at"],
        "revoke_reason": grant["revoke_reason"],
        "grant_id": grant["id"],
        "application_id": app["id"],
        "identity_id": person["id"],
    }


BY_APPLICATION = [
    "application",
    "role",
    "identity",
    "display_name",
    "lifecycle_state",
    "status",
    "granted_at",
    "granted_by",
    "expires_at",
    "revoked_at",
    "revoke_reason",
    "grant_id",
    "application_id",
    "identity_id",
]
BY_IDENTITY = [
    "identity",
    "display_name",
    "department",
    "lifecycle_state",
    "application",
    "role",
    "status",
    "granted_at",
    "granted_by",
    "expires_at",
    "revoked_at",
    "revoke_reason",
    "grant_id",
    "identity_id",
    "application_id",
]


def only(row: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    return {c: row[c] for c in columns}


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_grants_by_application_has_one_row_per_active_grant_in_order(env: Env, fmt: str) -> None:
    inv = inventory(env)
    expected = [
        only(grant_row(inv.ada_crm, inv.ada, inv.crm), BY_APPLICATION),
        only(grant_row(inv.bob_crm, inv.bob, inv.crm), BY_APPLICATION),
        only(grant_row(inv.ada_wiki, inv.ada, inv.wiki), BY_APPLICATION),
    ]
    rows = env.rows("grants_by_application", fmt)
    assert rows == ([as_csv(r) for r in expected] if fmt == "csv" else expected)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_grants_by_identity_with_every_status_and_a_filter(env: Env, fmt: str) -> None:
    inv = inventory(env)
    expected = [
        only(grant_row(inv.ada_crm, inv.ada, inv.crm), BY_IDENTITY),
        only(grant_row(inv.ada_wiki, inv.ada, inv.wiki), BY_IDENTITY),
        only(grant_row(inv.bob_crm, inv.bob, inv.crm), BY_IDENTITY),
        only(grant_row(inv.bob_wiki, inv.bob, inv.wiki), BY_IDENTITY),
    ]
    assert expected[3]["status"] == "revoked"
    assert expected[3]["revoke_reason"] == "manual"
    rows = env.rows("grants_by_identity", fmt, status="all")
    assert rows == ([as_csv(r) for r in expected] if fmt == "csv" else expected)
    wiki_only = env.rows("grants_by_identity", fmt, status="revoked", application="wiki")
    assert [r["grant_id"] for r in wiki_only] == [inv.bob_wiki["id"]]
    bob_only = env.rows("grants_by_identity", fmt, identity="bob@example.com")
    assert [r["grant_id"] for r in bob_only] == [inv.bob_crm["id"]]


def test_csv_cells_that_would_run_as_formulas_are_escaped(env: Env) -> None:
    inv = inventory(env)
    report = env.generate("grants_by_identity", "csv", identity="bob@example.com")
    text = env.download(report).decode("utf-8")
    header, line = text.splitlines()
    assert header == ",".join(BY_IDENTITY)
    cells = next(csv.reader([line]))
    assert cells[:6] == [
        "bob@example.com",
        "'" + EVIL_NAME,
        "'@SUM(A1:A9)",
        "active",
        "CRM",
        "'+editor",
    ]
    # the JSON is data, not a spreadsheet: the same values as they are
    document = json.loads(
        env.download(env.generate("grants_by_identity", "json", identity="bob@example.com"))
    )
    [row] = document["rows"]
    assert (row["display_name"], row["department"], row["role"]) == (
        EVIL_NAME,
        "@SUM(A1:A9)",
        "+editor",
    )
    assert inv.bob["display_name"] == EVIL_NAME


def test_a_report_is_stored_listed_and_audited(env: Env) -> None:
    inventory(env)
    first = env.generate("grants_by_application", "csv")
    second = env.generate("grants_by_identity", "json", status="all")
    assert first["params"] == {"status": "active"}
    assert second["params"] == {"status": "all"}
    assert first["created_by"] == ADMIN
    assert first["filename"].startswith("grants_by_application-")
    assert first["filename"].endswith(".csv")
    assert second["content_type"] == "application/json"
    assert first["content_type"] == "text/csv; charset=utf-8"
    assert ok(env.admin.get(first["link"])) == first
    listed = ok(env.admin.get(f"{API}/reports"))["items"]
    assert [r["id"] for r in listed] == [second["id"], first["id"]]
    filtered = ok(env.admin.get(f"{API}/reports", params={"kind": "grants_by_application"}))
    assert [r["id"] for r in filtered["items"]] == [first["id"]]
    [entry] = ok(
        env.admin.get(
            f"{API}/audit", params={"action": "report.generated", "target_id": first["id"]}
        )
    )["items"]
    assert entry["summary"] == {
        "kind": "grants_by_application",
        "format": "csv",
        "params": {"status": "active"},
        "rows": 3,
        "size": first["size"],
        "sha256": first["sha256"],
        "job_id": None,
    }
    assert error(env.admin.get(f"{API}/reports/nope"), 404)["code"] == "not_found"
    assert error(env.admin.get(f"{API}/reports/nope/content"), 404)["code"] == "not_found"


# --- run outcomes -----------------------------------------------------------------------------


def manual(name: str, application: str | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": name,
        "trigger": {"type": "manual"},
        "steps": [{"id": "note", "type": "set", "config": {"values": {"ok": True}}}],
    }
    if application:
        document["application"] = application
    return document


RUN_COLUMNS = [
    "workflow",
    "workflow_id",
    "application",
    "trigger",
    "total",
    "queued",
    "running",
    "waiting",
    "paused",
    "succeeded",
    "failed",
    "cancelled",
    "timed_out",
]


def outcome(
    workflow: str, workflow_id: str, application: str | None, **counts: int
) -> dict[str, Any]:
    statuses = {s: counts.get(s, 0) for s in RUN_COLUMNS[5:]}
    return {
        "workflow": workflow,
        "workflow_id": workflow_id,
        "application": application,
        "trigger": "manual",
        "total": sum(statuses.values()),
        **statuses,
    }


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_run_outcomes_by_workflow_count_each_status_over_the_period(env: Env, fmt: str) -> None:
    crm = ok(env.admin.post(f"{API}/applications", json={"name": "CRM"}), 201)
    beta = publish(env.db, manual("Beta", crm["id"]))
    alpha = publish(env.db, manual("Alpha"))
    gamma = publish(env.db, manual("Gamma"))
    start(env.db, alpha)
    cancelled = start(env.db, alpha)
    with env.db.transaction() as session:
        operations.cancel(session, ACTOR, DatabaseQueue(env.db), cancelled)
    start(env.db, beta)
    old = start(env.db, beta)
    with env.db.transaction() as session:
        run = session.get(Run, old)
        assert run is not None
        run.created_at = utcnow() - dt.timedelta(days=40)  # before the default 30 days
    expected = [
        outcome("Alpha", alpha, None, queued=1, cancelled=1),
        outcome("Beta", beta, "CRM", queued=1),
        outcome("Gamma", gamma, None),
    ]
    rows = env.rows("run_outcomes_by_workflow", fmt)
    assert rows == ([as_csv(r) for r in expected] if fmt == "csv" else expected)

    since = (utcnow() - dt.timedelta(days=45)).isoformat()
    wider = env.generate("run_outcomes_by_workflow", fmt, since=since)
    assert wider["params"]["since"] == since.replace("+00:00", "Z")
    content = env.download(wider)
    if fmt == "json":
        beta_row = json.loads(content)["rows"][1]
        assert (beta_row["workflow"], beta_row["total"], beta_row["queued"]) == ("Beta", 2, 2)
    else:
        beta_row = list(csv.DictReader(io.StringIO(content.decode())))[1]
        assert (beta_row["workflow"], beta_row["total"], beta_row["queued"]) == ("Beta", "2", "2")


# --- audit export -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_audit_export_has_the_entries_of_the_range_oldest_first(env: Env, fmt: str) -> None:
    inventory(env)
    since = utcnow() - dt.timedelta(hours=1)
    until = utcnow() + dt.timedelta(seconds=1)
    entries = ok(
        env.admin.get(
            f"{API}/audit",
            params={"since": since.isoformat(), "until": until.isoformat(), "limit": 500},
        )
    )["items"]
    fields = ["id", "at", "actor", "actor_id", "action", "target_type", "target_id", "summary"]
    expected = [
        {**{k: e[k] for k in fields}, **{k: e[k] for k in ("request_id", "prev_hash", "hash")}}
        for e in reversed(entries)
    ]
    assert len(expected) > 10
    rows = env.rows("audit_export", fmt, since=since.isoformat(), until=until.isoformat())
    assert rows == ([as_csv(r) for r in expected] if fmt == "csv" else expected)

    grants_only = env.rows(
        "audit_export", fmt, since=since.isoformat(), until=until.isoformat(), action="grant.*"
    )
    assert [r["action"] for r in grants_only] == ["grant.created"] * 4 + ["grant.revoked"]


def test_audit_export_needs_audit_read_to_generate_and_to_download(env: Env) -> None:
    with (
        env.api.as_role(Role.OPERATOR, "operator@example.com") as operator,
        env.api.as_role(Role.AUDITOR, "auditor@example.com") as auditor,
    ):
        # the operator manages jobs and reports, but may not read the audit log
        refused = error(operator.post(f"{API}/reports", json={"kind": "audit_export"}), 403)
        assert refused["missing_permission"] == "audit:read"
        assert ok(operator.post(f"{API}/reports", json={"kind": "grants_by_identity"}), 201)
        # the auditor reads the audit log but may not generate reports
        refused = error(auditor.post(f"{API}/reports", json={"kind": "audit_export"}), 403)
        assert refused["missing_permission"] == "job:manage"
        report = env.generate("audit_export", "json")
        assert ok(operator.get(report["link"]))["kind"] == "audit_export"  # the metadata
        refused = error(operator.get(report["content_link"]), 403)
        assert refused["missing_permission"] == "audit:read"
        content = env.download(report, auditor)
        assert json.loads(content)["kind"] == "audit_export"


def test_permissions(env: Env) -> None:
    report = env.generate("grants_by_application", "csv")
    with env.api.as_role(Role.VIEWER, "viewer@example.com") as viewer:
        assert env.download(report, viewer)
        refused = error(viewer.post(f"{API}/reports", json={"kind": "grants_by_identity"}), 403)
        assert refused["missing_permission"] == "job:manage"
    with env.api.client(env.api.user_token("nobody@example.com")) as nobody:
        for path in (f"{API}/reports", report["link"], report["content_link"]):
            assert error(nobody.get(path), 403)["missing_permission"] == "job:read"


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "everything"}, "body.kind"),
        ({"format": "csv"}, "body.kind"),
        ({"kind": "grants_by_identity", "format": "xlsx"}, "body.format"),
        ({"kind": "grants_by_identity", "colour": "red"}, "body.colour"),
        ({"kind": "grants_by_identity", "params": {"status": "maybe"}}, "body.params.status"),
        ({"kind": "grants_by_identity", "params": {"colour": "red"}}, "body.params.colour"),
        (
            {"kind": "grants_by_identity", "params": {"application": "Nope"}},
            "body.params.application",
        ),
        (
            {"kind": "grants_by_identity", "params": {"identity": "who@example.com"}},
            "body.params.identity",
        ),
        ({"kind": "audit_export", "params": {"since": "yesterday"}}, "body.params.since"),
        ({"kind": "audit_export", "params": {"since": "2025-01-01T00:00:00"}}, "body.params.since"),
        (
            {
                "kind": "run_outcomes_by_workflow",
                "params": {"since": "2025-02-01T00:00:00Z", "until": "2025-01-01T00:00:00Z"},
            },
            "body.params.since",
        ),
    ],
)
def test_a_wrong_request_is_422_naming_the_field(
    env: Env, body: dict[str, Any], field: str
) -> None:
    refused = error(env.admin.post(f"{API}/reports", json=body), 422)
    assert refused["code"] == "validation_error"
    assert refused["details"][0]["field"] == field, refused
    assert field in refused["message"]


# --- the report job ---------------------------------------------------------------------------


def create_job(env: Env, config: dict[str, Any]) -> str:
    with env.db.transaction() as session:
        job = jobs.create_built_in(
            session,
            ACTOR,
            jobs.BuiltInJobCreate(
                name="Weekly access report", kind="report", cron="0 6 * * 1", config=config
            ),
        )
        return job.id


def test_the_report_job_generates_its_report_through_run_now(env: Env) -> None:
    inv = inventory(env)
    job_id = create_job(
        env, {"kind": "grants_by_application", "format": "json", "params": {"application": "CRM"}}
    )
    with env.db.transaction() as session:
        occurrence = scheduler.run_now(session, ACTOR, DatabaseQueue(env.db), job_id)
        result = (occurrence.result_type, occurrence.result_id, occurrence.outcome)
    assert result[0] == "report"
    assert result[2] == "succeeded"
    report = ok(env.admin.get(f"{API}/reports/{result[1]}"))
    assert report["job_id"] == job_id
    assert report["created_by"] == "system:scheduler"
    assert report["params"] == {
        "status": "active",
        "application": {"id": inv.crm["id"], "name": "CRM"},
    }
    document = json.loads(env.download(report))
    assert [r["grant_id"] for r in document["rows"]] == [inv.ada_crm["id"], inv.bob_crm["id"]]


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({}, "body.config.kind"),
        ({"kind": "everything"}, "body.config.kind"),
        ({"kind": "audit_export", "format": "pdf"}, "body.config.format"),
        ({"kind": "audit_export", "params": {"since": "soon"}}, "body.config.params.since"),
        ({"kind": "audit_export", "when": "daily"}, "body.config.when"),
    ],
)
def test_a_report_job_with_a_wrong_config_is_refused_naming_the_field(
    env: Env, config: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        create_job(env, config)
    assert caught.value.details[0]["field"] == field


# --- the CLI ----------------------------------------------------------------------------------


@pytest.mark.acceptance
def test_the_cli_generates_lists_and_downloads(env: Env, tmp_path: Path) -> None:
    if env.db.url.get_backend_name() != "sqlite":
        pytest.skip("the CLI is exercised once, on SQLite")
    inv = inventory(env)
    environment = grantflow_env(
        database_url=env.db.url.render_as_string(hide_password=False),
        secret_key_file=tmp_path / "secret.key",
    )

    def grantflow(*args: str) -> Any:
        return run_grantflow(*args, env=environment, cwd=tmp_path)

    written = tmp_path / "grants.csv"
    shown = json_output(
        grantflow(
            "reports", "generate", "grants_by_identity", "--format", "csv",
            "-p", "status=all", "-o", str(written), "--json",
        )
    )  # fmt: skip
    assert shown["rows"] == 4
    assert shown["created_by"] == "system:cli"
    assert hashlib.sha256(written.read_bytes()).hexdigest() == shown["sha256"]
    assert written.read_text().splitlines()[0] == ",".join(BY_IDENTITY)
    listed = json_output(grantflow("reports", "list", "--json"))
    assert [r["id"] for r in listed] == [shown["id"]]
    again = tmp_path / "again.csv"
    result = grantflow("reports", "download", shown["id"], "-o", str(again))
    assert result.returncode == 0, result.stderr
    assert again.read_bytes() == written.read_bytes()
    assert (
        result.stdout.strip()
        == f"{again}: {len(written.read_bytes())} bytes, sha256 " + (shown["sha256"])
    )
    nowhere = grantflow("reports", "download", shown["id"], "-o", str(tmp_path / "no" / "x.csv"))
    assert nowhere.returncode == 1
    assert nowhere.stderr.startswith(f"error: cannot write {tmp_path / 'no' / 'x.csv'}: ")
    # generate: the report is stored though its file could not be written; the advice works
    stored = grantflow("reports", "generate", "grants_by_identity", "-o", str(tmp_path / "no/y"))
    assert stored.returncode == 1
    advice = stored.stderr.splitlines()[-1].strip()
    assert advice.startswith("next: the report is stored: grantflow reports download ")
    command = advice.removeprefix("next: the report is stored: grantflow ").split()
    taken = grantflow(*command[:-1], str(tmp_path / "y.csv"))
    assert taken.returncode == 0, taken.stderr
    content = (tmp_path / "y.csv").read_bytes()
    assert taken.stdout.strip().endswith(f"sha256 {hashlib.sha256(content).hexdigest()}")
    assert content.decode().splitlines()[0] == ",".join(BY_IDENTITY)

    # content altered in the database: refused, and the file already there is left as it was
    with env.db.transaction() as session:
        session.execute(
            update(ReportChunk)
            .where(ReportChunk.report_id == shown["id"])
            .values(data=ReportChunk.data + b"tampered")
        )
    altered = grantflow("reports", "download", shown["id"], "-o", str(again))
    assert altered.returncode == 1
    assert altered.stderr.startswith(
        f"error: report {shown['id']} does not match its stored SHA-256 ("
    ), altered.stderr
    assert again.read_bytes() == written.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".part") == []
    refused = grantflow("reports", "generate", "grants_by_identity", "-p", "status=maybe")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: params.status: ")
    assert inv.bob_wiki["status"] == "revoked"
