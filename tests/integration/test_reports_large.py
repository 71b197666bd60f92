"""Large reports: above INLINE_ROWS rows a report is `generating` until the workers write it,
in chunks, from its stored parameters, with the same bytes the request would have written;
a failure is kept on the report; the limit names the field; a report stored whole before
0032 still downloads; names sort by their lower-cased form on both databases."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select, text, update
from structlog.testing import capture_logs

from grantflow.access.models import Grant, Identity
from grantflow.api import create_app
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Role
from grantflow.cli.local import AsgiTransport
from grantflow.config import Settings
from grantflow.governance import report_files, report_rows, reports
from grantflow.governance.models import Report, ReportChunk
from grantflow.schedules.models import Occurrence
from grantflow.store.base import utcnow
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.connections import API, ok
from tests.support.engine import running_worker
from tests.support.processes import poll

ADMIN = "admin@example.com"
PEOPLE = ["bob@example.com", "Ada@example.com", "carl@example.com", "_x@example.com"]


@pytest.fixture
def admin(api: Api) -> Iterator[httpx.Client]:
    with api.as_role(Role.ADMIN, ADMIN) as client:
        yield client


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two rows at most in a request, chunks of 100 bytes: a few rows make a large report."""
    monkeypatch.setattr(reports, "INLINE_ROWS", 2)
    monkeypatch.setattr(report_files, "CHUNK_BYTES", 100)


def granted(admin: httpx.Client) -> None:
    app = ok(admin.post(f"{API}/applications", json={"name": "Wiki"}), 201)
    for email in PEOPLE:
        person = ok(admin.post(f"{API}/identities", json={"email": email}), 201)
        body = {"identity": person["id"], "application": app["id"]}
        ok(admin.post(f"{API}/grants", json=body), 201)


def generate(admin: httpx.Client, kind: str, fmt: str = "csv", **params: Any) -> dict[str, Any]:
    body = {"kind": kind, "format": fmt, "params": params}
    answer = admin.post(f"{API}/reports", json=body)
    assert answer.status_code == 201, answer.text
    shown: dict[str, Any] = answer.json()
    return shown


def report_request_id(api: Api, report_id: str) -> str | None:
    with api.database.transaction() as session:
        stored = session.get(Report, report_id)
        assert stored is not None
        return stored.request_id


def tick(database: Database) -> bool:
    with database.transaction() as session:
        return reports.generate_due(session)


def download(admin: httpx.Client, report: dict[str, Any]) -> bytes:
    answer = admin.get(report["content_link"])
    assert answer.status_code == 200, answer.text
    assert hashlib.sha256(answer.content).hexdigest() == answer.headers["x-content-sha256"]
    assert int(answer.headers["content-length"]) == len(answer.content) == report["size"]
    return answer.content


def rows_of_grants_by_identity(
    monkeypatch: pytest.MonkeyPatch, rows: Callable[[Any, Any], Iterator[dict[str, Any]]]
) -> report_rows.KindSpec:
    """`grants_by_identity` reads its rows with `rows` until the test ends; its real spec."""
    kind = report_rows.ReportKind.GRANTS_BY_IDENTITY
    spec = report_rows.KINDS[kind]
    monkeypatch.setitem(
        reports.KINDS,
        kind,
        report_rows.KindSpec(spec.params, spec.plan, rows, spec.columns, spec.description),
    )
    return spec


def disk_full(*_: Any) -> Iterator[dict[str, Any]]:
    raise RuntimeError("the disk is full")
    yield {}


def report_job(admin: httpx.Client) -> dict[str, Any]:
    body = {
        "name": "Access by person",
        "kind": "report",
        "cron": "0 6 * * 1",
        "timezone": "UTC",
        "config": {"kind": "grants_by_identity"},
    }
    job: dict[str, Any] = ok(admin.post(f"{API}/jobs", json=body), 201)
    return job


@pytest.mark.usefixtures("small")
def test_a_large_report_is_written_by_the_workers_as_the_request_would_write_it(
    api: Api, admin: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    granted(admin)
    report = generate(admin, "grants_by_identity")
    assert (report["status"], report["rows"], report["size"]) == ("generating", 4, 0)
    refused = admin.get(report["content_link"])
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "report_generating"

    assert tick(api.database)
    assert tick(api.database) is False  # nothing else to write
    ready = ok(admin.get(report["link"]))
    assert (ready["status"], ready["rows"], ready["error"]) == ("ready", 4, None)
    written = download(admin, ready)
    with api.database.transaction() as session:
        stored = session.execute(
            select(func.count()).where(ReportChunk.report_id == report["id"])
        ).scalar_one()
    assert stored == -(-len(written) // 100) > 1  # a chunk of 100 bytes at a time

    monkeypatch.setattr(reports, "INLINE_ROWS", 100)  # the same report written in the request
    inline = generate(admin, "grants_by_identity")
    assert inline["status"] == "ready"
    assert download(admin, inline) == written
    names = [r["identity"] for r in csv.DictReader(io.StringIO(written.decode()))]
    assert names == ["_x@example.com", "ada@example.com", "bob@example.com", "carl@example.com"]

    entries = ok(admin.get(f"{API}/audit", params={"action": "report.generated"}))["items"]
    by_worker = next(e for e in entries if e["target_id"] == report["id"])
    assert by_worker["summary"]["sha256"] == ready["sha256"]
    asker = ok(admin.get(f"{API}/me"))  # the entry names who asked, as the request's would
    assert (by_worker["actor"], by_worker["actor_id"]) == (ADMIN, asker["id"])
    assert by_worker["request_id"] == report_request_id(api, report["id"])


@pytest.mark.usefixtures("small")
def test_a_large_json_report_is_the_same_from_a_worker_and_from_a_waiting_request(
    api: Api, admin: httpx.Client
) -> None:
    """`?wait=true` writes a large report in the request (the CLI's local mode has no worker);
    a worker's has the same bytes but its time (the params keep their keys sorted: jsonb
    reorders them)."""
    granted(admin)
    body = {"kind": "grants_by_identity", "format": "json", "params": {"status": "all"}}
    body["params"]["application"] = "Wiki"
    waited = admin.post(f"{API}/reports", params={"wait": "true"}, json=body)
    assert waited.status_code == 201, waited.text
    assert waited.json()["status"] == "ready"
    later = generate(admin, "grants_by_identity", "json", status="all", application="Wiki")
    assert later["status"] == "generating"
    assert tick(api.database)
    ready = ok(admin.get(later["link"]))

    def without_time(content: bytes) -> bytes:
        return b"\n".join(line for line in content.split(b"\n") if b'"generated_at"' not in line)

    assert without_time(download(admin, ready)) == without_time(download(admin, waited.json()))


def test_names_sort_lower_cased_in_code_point_order_on_both_databases(
    api: Api, admin: httpx.Client
) -> None:
    for name in ("éa", "Zed", "Éz", "_x", "ada"):
        app = ok(admin.post(f"{API}/applications", json={"name": name}), 201)
        person = ok(
            admin.post(f"{API}/identities", json={"email": f"{len(name)}{ord(name[0])}@x.io"}), 201
        )
        ok(
            admin.post(f"{API}/grants", json={"identity": person["id"], "application": app["id"]}),
            201,
        )
    report = generate(admin, "grants_by_application")
    names = [
        r["application"] for r in csv.DictReader(io.StringIO(download(admin, report).decode()))
    ]
    assert names == ["_x", "ada", "Zed", "éa", "Éz"]


@pytest.mark.usefixtures("small")
def test_a_worker_writes_a_large_json_report(api: Api, admin: httpx.Client) -> None:
    granted(admin)
    report = generate(admin, "grants_by_application", "json", status="all")
    with running_worker(api.database, tick_seconds=0.2):
        ready = poll(
            lambda: (v := ok(admin.get(report["link"])))["status"] == "ready" and v,
            timeout=60,
            what="the workers to write the report",
        )
    document = json.loads(download(admin, ready))
    assert document["row_count"] == len(document["rows"]) == 4
    assert document["params"] == {"status": "all"}
    assert all(list(r) == document["columns"] for r in document["rows"])


@pytest.mark.usefixtures("small")
def test_a_report_the_workers_cannot_write_says_why(
    api: Api, admin: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    granted(admin)
    report = generate(admin, "grants_by_identity")

    def broken(*_: Any) -> Iterator[dict[str, Any]]:
        yield {"identity": "half"}
        raise RuntimeError("the disk is full")

    rows_of_grants_by_identity(monkeypatch, broken)
    assert tick(api.database)
    failed = ok(admin.get(report["link"]))
    assert (failed["status"], failed["error"]) == ("failed", "RuntimeError: the disk is full")
    refused = admin.get(report["content_link"])
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "report_failed"
    assert "the disk is full" in refused.json()["error"]["message"]
    with api.database.transaction() as session:  # nothing of it is kept
        assert session.execute(select(func.count()).select_from(ReportChunk)).scalar_one() == 0


def test_more_rows_than_the_limit_is_refused_naming_the_field(
    api: Api, admin: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000,000 rows on PostgreSQL; on SQLite, whose one writer a report holds while it is
    written, 100,000."""
    granted(admin)
    monkeypatch.setattr(reports, "MAX_ROWS", 3)
    monkeypatch.setattr(reports, "SQLITE_MAX_ROWS", 2)
    answer = admin.post(f"{API}/reports", json={"kind": "grants_by_identity"})
    assert answer.status_code == 422
    error = answer.json()["error"]
    if api.database.dialect == "postgresql":
        assert error["message"] == "body.params: the report would have 4 rows, more than 3"
        assert error["details"] == [{"field": "body.params", "message": "more than 3 rows"}]
    else:
        assert error["message"] == (
            "body.params: the report would have 4 rows, more than 2 (on SQLite; on PostgreSQL 3)"
        )
        assert error["details"] == [{"field": "body.params", "message": "more than 2 rows"}]


def test_a_report_stored_whole_before_chunks_still_downloads(api: Api, admin: httpx.Client) -> None:
    content = b"identity\r\nada@example.com\r\n"
    with api.database.transaction() as session:
        session.execute(
            insert(Report),
            {
                "id": "0190aaaa-0000-7000-8000-000000000001",
                "kind": "grants_by_identity",
                "format": "csv",
                "params": {"status": "active"},
                "status": "ready",
                "rows": 1,
                "size": len(content),
                "sha256": hashlib.sha256(content).hexdigest(),
                "content": content,
                "created_by": ADMIN,
                "created_at": utcnow(),
            },
        )
    shown = ok(admin.get(f"{API}/reports/0190aaaa-0000-7000-8000-000000000001"))
    assert download(admin, shown) == content


def test_a_deleted_identity_is_named_as_it_was(api: Api, admin: httpx.Client) -> None:
    """The label a grant's identity had, in SQL as in `identity_label`: a deleted identity's
    row sorts and shows by the e-mail it had."""
    granted(admin)
    with api.database.transaction() as session:
        ada = session.execute(select(Identity).where(Identity.email == "ada@example.com"))
        person = ada.scalar_one()
        person.attributes = {"deleted_email": "zoe@example.com"}
        person.email = None
        person.deleted_at = utcnow()
    report = generate(admin, "grants_by_identity", status="all")
    names = [r["identity"] for r in csv.DictReader(io.StringIO(download(admin, report).decode()))]
    assert names == ["_x@example.com", "bob@example.com", "carl@example.com", "zoe@example.com"]


@pytest.mark.usefixtures("small")
def test_a_failed_report_is_generated_again_as_its_refusal_says(
    api: Api, admin: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    granted(admin)
    first = generate(admin, "audit_export")
    real = reports._write

    def broken(*_: Any) -> None:
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(reports, "_write", broken)
    assert tick(api.database)
    refused = admin.get(first["content_link"]).json()["error"]
    assert refused["next_action"] == "generate it again (POST /api/v1/reports)"
    monkeypatch.setattr(reports, "_write", real)  # the cause is fixed
    again = generate(admin, "audit_export")  # the next action, taken
    assert tick(api.database)
    assert ok(admin.get(again["link"]))["status"] == "ready"
    assert download(admin, ok(admin.get(again["link"])))


@pytest.mark.usefixtures("small")
def test_a_report_jobs_occurrence_ends_as_its_report_does_once_the_workers_wrote_it(
    api: Api, admin: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report job's large report: the occurrence has no outcome while the report is
    `generating`, then the report's — succeeded, or failed with the report's error."""
    granted(admin)
    job = report_job(admin)

    def occurrence() -> dict[str, Any]:
        (latest, *_) = ok(admin.get(f"{API}/jobs/{job['id']}/occurrences"))["items"]
        return latest

    fired = ok(admin.post(f"{API}/jobs/{job['id']}/run-now"), 201)
    assert (fired["result_type"], fired["outcome"]) == ("report", None)
    assert ok(admin.get(f"{API}/reports/{fired['result_id']}"))["status"] == "generating"
    assert tick(api.database)
    assert ok(admin.get(f"{API}/reports/{fired['result_id']}"))["status"] == "ready"
    assert (occurrence()["outcome"], occurrence()["reason"]) == ("succeeded", None)
    shown = ok(admin.get(f"{API}/jobs/{job['id']}"))["last_occurrence"]
    assert shown["outcome"] == "succeeded"

    rows_of_grants_by_identity(monkeypatch, disk_full)
    again = ok(admin.post(f"{API}/jobs/{job['id']}/run-now"), 201)
    assert again["outcome"] is None
    assert tick(api.database)
    ended = occurrence()
    assert ended["id"] == again["id"]
    assert (ended["outcome"], ended["reason"]) == (
        "failed",
        "report failed: RuntimeError: the disk is full",
    )


def test_a_report_job_whose_report_fails_at_once_says_why_in_the_reports_words(
    api: Api, admin: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small report, written as the job fires: its failure is the occurrence's, in the words
    a report the workers could not write gives (not an internal error's repr)."""
    granted(admin)
    job = report_job(admin)
    rows_of_grants_by_identity(monkeypatch, disk_full)
    fired = ok(admin.post(f"{API}/jobs/{job['id']}/run-now"), 201)
    assert (fired["outcome"], fired["reason"]) == (
        "failed",
        "report failed: RuntimeError: the disk is full",
    )
    assert fired["result_id"] is None  # (what the failing write began was undone)


@pytest.mark.postgres
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
@pytest.mark.parametrize("value", ["ssn-123-45-6789", 'x"SECRET-456', "SECRET-1\nmore"])
def test_a_report_jobs_failure_keeps_no_value_the_database_quoted(
    api: Api, admin: httpx.Client, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """A data error's first line quotes the value it refused (a row's, a person's), with no
    escaping of a quote or a line break inside: the occurrence's reason keeps the error, not
    the value, nor the statement's parameters."""
    granted(admin)
    job = report_job(admin)

    def refused(session: Any, *_: Any) -> Iterator[dict[str, Any]]:
        session.execute(text("SELECT CAST(:value AS integer)"), {"value": value})
        yield {}

    rows_of_grants_by_identity(monkeypatch, refused)
    fired = ok(admin.post(f"{API}/jobs/{job['id']}/run-now"), 201)
    assert fired["outcome"] == "failed"
    assert fired["reason"] == (
        'report failed: InvalidTextRepresentation: invalid input syntax for type integer: "…"'
    )


@pytest.mark.postgres
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_job_whose_database_connection_is_lost_as_it_fires_is_a_503_not_a_failure(
    api: Api, admin: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server ends the connection under a report job's run-now: nothing can be recorded,
    so the request says the database is unavailable (and a retry works), rather than a 500."""
    granted(admin)
    job = report_job(admin)
    spec = report_rows.KINDS[report_rows.ReportKind.GRANTS_BY_IDENTITY]

    def cut(session: Any, *_: Any) -> Iterator[dict[str, Any]]:
        session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        yield {}

    rows_of_grants_by_identity(monkeypatch, cut)
    answer = admin.post(f"{API}/jobs/{job['id']}/run-now")
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "database_unavailable"
    monkeypatch.setitem(reports.KINDS, report_rows.ReportKind.GRANTS_BY_IDENTITY, spec)
    again = ok(admin.post(f"{API}/jobs/{job['id']}/run-now"), 201)
    assert again["outcome"] == "succeeded"


@pytest.mark.postgres
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
@pytest.mark.usefixtures("small")
def test_a_report_being_written_holds_back_no_other_timer(
    api: Api, admin: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker writes reports in a thread of their own: while one is being written, grant
    expiry goes on. (PostgreSQL: on SQLite a report holds the one writer, whatever the
    thread.)"""
    granted(admin)
    who = ok(admin.post(f"{API}/identities", json={"email": "dora@example.com"}), 201)
    in_an_hour = (utcnow() + dt.timedelta(hours=1)).isoformat()
    body = {"identity": who["id"], "application": "Wiki", "expires_at": in_an_hour}
    expiring = ok(admin.post(f"{API}/grants", json=body), 201)
    report = generate(admin, "grants_by_identity")

    writing, release = threading.Event(), threading.Event()
    spec = report_rows.KINDS[report_rows.ReportKind.GRANTS_BY_IDENTITY]

    def held(session: Any, params: Any) -> Iterator[dict[str, Any]]:
        writing.set()
        assert release.wait(60)
        yield from spec.rows(session, params)

    rows_of_grants_by_identity(monkeypatch, held)
    with running_worker(api.database, tick_seconds=0.2):
        poll(writing.is_set, timeout=60, what="the worker to start writing the report")
        with api.database.transaction() as session:  # time passes: the grant expires
            row = session.get(Grant, expiring["id"])
            assert row is not None
            row.expires_at = utcnow() - dt.timedelta(seconds=1)

        def revoked() -> dict[str, Any] | None:
            shown: dict[str, Any] = ok(admin.get(f"{API}/grants/{expiring['id']}"))
            return shown if shown["status"] == "revoked" else None

        shown = poll(revoked, timeout=60, what="the expired grant to be revoked")
        assert shown["revoke_reason"] == "expired"
        assert ok(admin.get(report["link"]))["status"] == "generating"  # (still held)
        release.set()

        def written() -> dict[str, Any] | None:
            view: dict[str, Any] = ok(admin.get(report["link"]))
            return view if view["status"] != "generating" else None

        ready = poll(written, timeout=60, what="the report to be written")
    # (its rows are read as it is written: the grant revoked meanwhile is not among them)
    assert (ready["status"], ready["rows"]) == ("ready", 4)
    assert b"dora@example.com" not in download(admin, ready)


def test_a_sink_failing_in_local_mode_is_the_downloads_error_not_the_apps(
    api: Api, admin: httpx.Client, settings: Settings
) -> None:
    """The command line's in-process transport: a download's file that cannot be written (a
    full disk) raises its own error to the command, and the app, which streamed on, saw none
    (it would have logged it as an unhandled error of the request)."""
    granted(admin)
    report = generate(admin, "grants_by_identity")

    class Full:
        def write(self, data: bytes) -> None:
            raise OSError(28, "No space left on device")

    app = create_app(settings, api.database)
    transport = AsgiTransport(app, Actor.system("cli"), lambda: None)
    try:
        with capture_logs() as logs, pytest.raises(OSError, match="No space left on device"):
            transport.send("GET", report["content_link"], {}, b"", Full())
        assert [e["event"] for e in logs if e["log_level"] in ("error", "critical")] == []
        answer = transport.send("GET", report["content_link"], {}, b"")  # (it goes on serving)
        assert answer.status == 200
        assert hashlib.sha256(answer.content).hexdigest() == answer.headers["x-content-sha256"]
    finally:
        transport.close()
        app.state.grantflow.connections.http.close()
        app.state.grantflow.queue.close()


@pytest.mark.usefixtures("small")
def test_a_report_job_whose_scheduled_report_failed_has_a_health_note_naming_why(
    api: Api, admin: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduled occurrence whose report the workers could not write, then a Run now that
    succeeded: the job's health note names the report's failure, not a run or a connection
    (a report job has neither)."""
    granted(admin)
    job = report_job(admin)
    spec = rows_of_grants_by_identity(monkeypatch, disk_full)
    failed = ok(admin.post(f"{API}/jobs/{job['id']}/run-now"), 201)
    assert tick(api.database)
    with api.database.transaction() as session:  # (as the scheduler records its own: not manual)
        session.execute(
            update(Occurrence)
            .where(Occurrence.id == failed["id"])
            .values(manual=False, scheduled_for=utcnow() - dt.timedelta(hours=1))
        )
    monkeypatch.setitem(reports.KINDS, report_rows.ReportKind.GRANTS_BY_IDENTITY, spec)
    ok(admin.post(f"{API}/jobs/{job['id']}/run-now"), 201)
    assert tick(api.database)
    note = ok(admin.get(f"{API}/jobs/{job['id']}"))["health_note"]
    assert note.startswith("Run now succeeded")
    assert "(report failed: RuntimeError: the disk is full)" in note
    assert "connection" not in note
