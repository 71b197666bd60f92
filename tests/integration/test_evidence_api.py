"""Evidence on runs over real HTTP, on both databases: notes and files are stored with their
SHA-256, listed and served back byte for byte to auditors; a refused upload names what is
wrong and leaves nothing behind; every addition is audited."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import httpx

from grantflow.auth.permissions import Role
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.connections import API, allowing_loopback, ok, serving_api
from tests.support.engine import publish, start

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + os.urandom(300)


def a_run(database: Database) -> str:
    """A run to attach evidence to (queued: no worker needed)."""
    workflow = publish(
        database,
        {
            "name": "Offboard by hand",
            "trigger": {"type": "manual"},
            "steps": [{"id": "mark", "type": "set", "config": {"values": {"done": True}}}],
        },
    )
    return start(database, workflow)


def upload(
    client: httpx.Client,
    run_id: str,
    content: bytes,
    content_type: str = "image/png",
    filename: str = "proof.png",
    note: str | None = None,
) -> httpx.Response:
    data = {"note": note} if note is not None else None
    return client.post(
        f"{API}/runs/{run_id}/evidence",
        files={"file": (filename, content, content_type)},
        data=data,
    )


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    body: dict[str, Any] = response.json()["error"]
    return body


def audit_of(client: httpx.Client, action: str, run_id: str) -> list[dict[str, Any]]:
    page = ok(client.get(f"{API}/audit", params={"action": action, "target_id": run_id}))
    items: list[dict[str, Any]] = page["items"]
    return items


def test_a_note_and_a_file_are_listed_and_downloaded_unchanged_by_an_auditor(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    run_id = a_run(database)
    note = ok(
        admin.post(
            f"{API}/runs/{run_id}/notes",
            json={"note": "  Removed ada from the CRM admin console by hand.  "},
        ),
        201,
    )
    assert note["kind"] == "note"
    assert note["note"] == "Removed ada from the CRM admin console by hand."
    assert note["sha256"] is None
    assert note["created_by"] == "admin@example.com"

    added = ok(upload(admin, run_id, PNG, note="screenshot of the user list"), 201)
    assert added["kind"] == "file"
    assert added["run_id"] == run_id
    assert added["filename"] == "proof.png"
    assert added["content_type"] == "image/png"
    assert added["size"] == len(PNG)
    assert added["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert added["note"] == "screenshot of the user list"

    with api.as_role(Role.AUDITOR, "auditor@example.com") as auditor:
        listed = ok(auditor.get(f"{API}/runs/{run_id}/evidence"))
        assert [(e["id"], e["kind"]) for e in listed] == [
            (note["id"], "note"),
            (added["id"], "file"),
        ]
        got = auditor.get(f"{API}/runs/{run_id}/evidence/{added['id']}/content")
        assert got.status_code == 200, got.text
        assert got.content == PNG
        assert got.headers["content-type"] == "image/png"
        assert got.headers["x-content-sha256"] == hashlib.sha256(got.content).hexdigest()
        assert got.headers["content-disposition"] == 'attachment; filename="proof.png"'
        assert got.headers["x-content-type-options"] == "nosniff"

        # a note has no content; an evidence id of another run is not this run's
        assert auditor.get(f"{API}/runs/{run_id}/evidence/{note['id']}/content").status_code == 404
        other = a_run(database)
        missing = auditor.get(f"{API}/runs/{other}/evidence/{added['id']}/content")
        assert error(missing, 404)["code"] == "not_found"

        [file_entry] = audit_of(auditor, "run.evidence_added", run_id)
        assert file_entry["actor"] == "admin@example.com"
        assert file_entry["summary"]["evidence_id"] == added["id"]
        assert file_entry["summary"]["sha256"] == added["sha256"]
        assert file_entry["summary"]["size"] == len(PNG)
        [note_entry] = audit_of(auditor, "run.note_added", run_id)
        assert note_entry["summary"] == {"evidence_id": note["id"]}


def test_text_evidence_keeps_its_type_and_bytes(admin: httpx.Client, database: Database) -> None:
    """A CSV export and an e-mail are accepted as text and come back identical."""
    run_id = a_run(database)
    csv = b"user,removed_at\nada@example.com,2030-01-31T10:02:00Z\n"
    eml = b"From: it@example.com\r\nSubject: access removed\r\n\r\nDone \xe2\x9c\x93\r\n"
    files = [("export.csv", "text/csv", csv), ("mail.eml", "message/rfc822", eml)]
    for name, kind, content in files:
        added = ok(upload(admin, run_id, content, kind, name), 201)
        got = admin.get(f"{API}/runs/{run_id}/evidence/{added['id']}/content")
        assert got.content == content
        assert got.headers["content-type"].split(";")[0] == kind


def test_refused_uploads_name_the_problem_and_leave_nothing_behind(
    database: Database, tmp_path: Path
) -> None:
    settings = allowing_loopback(database, tmp_path, evidence_max_bytes=2048)
    with serving_api(settings, database) as api, api.as_role(Role.ADMIN, "a@example.com") as admin:
        run_id = a_run(database)
        ok(upload(admin, run_id, PNG), 201)
        before = ok(admin.get(f"{API}/runs/{run_id}/evidence"))
        audited = len(audit_of(admin, "run.evidence_added", run_id))

        too_big = error(upload(admin, run_id, PNG + b"\x00" * 2048), 413)
        assert too_big["code"] == "payload_too_large"
        assert "2048" in too_big["message"]
        assert too_big["details"][0]["field"] == "file"

        not_png = error(upload(admin, run_id, b"GIF89a pretending to be a PNG"), 422)
        assert not_png["details"][0]["field"] == "file"
        assert "image/png" in not_png["message"]

        exe = b"MZ\x90\x00\x03\x00\x00\x00" + os.urandom(64)
        refused = error(upload(admin, run_id, exe, "application/x-msdownload", "tool.exe"), 422)
        assert refused["details"][0]["field"] == "file"
        assert "application/x-msdownload" in refused["message"]
        assert "image/png" in refused["message"]  # says what is accepted
        html = error(upload(admin, run_id, b"<html></html>", "text/html", "page.html"), 422)
        assert "text/html" in html["message"]

        empty = error(upload(admin, run_id, b"", "text/plain", "empty.txt"), 422)
        assert empty["details"][0] == {"field": "file", "message": "empty"}

        binary_text = error(upload(admin, run_id, b"\xff\xfe\x00", "text/plain", "x.txt"), 422)
        assert binary_text["details"][0]["field"] == "file"

        blank_note = error(admin.post(f"{API}/runs/{run_id}/notes", json={"note": "   "}), 422)
        assert blank_note["details"][0]["field"] == "body.note"

        assert ok(admin.get(f"{API}/runs/{run_id}/evidence")) == before
        assert len(audit_of(admin, "run.evidence_added", run_id)) == audited
        assert audit_of(admin, "run.note_added", run_id) == []


def test_unknown_run_is_404_and_a_viewer_cannot_add_evidence(
    api: Api, admin: httpx.Client, database: Database
) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    assert error(upload(admin, missing, PNG), 404)["code"] == "not_found"
    assert missing in error(admin.get(f"{API}/runs/{missing}/evidence"), 404)["message"]
    note = admin.post(f"{API}/runs/{missing}/notes", json={"note": "x"})
    assert error(note, 404)["code"] == "not_found"

    run_id = a_run(database)
    with api.as_role(Role.VIEWER, "viewer@example.com") as viewer:
        for refused in (
            upload(viewer, run_id, PNG),
            viewer.post(f"{API}/runs/{run_id}/notes", json={"note": "I was here"}),
        ):
            body = error(refused, 403)
            assert body["missing_permission"] == "evidence:write"
            assert "evidence:write" in body["message"]
        assert ok(viewer.get(f"{API}/runs/{run_id}/evidence")) == []
