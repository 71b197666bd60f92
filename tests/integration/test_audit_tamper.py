"""The audit log detects what it does not refuse: TRUNCATE refused, the tail deleted with the
triggers bypassed, triggers taken away, rows rewritten with later hashes recomputed, checkpoints
edited; an honest log with checkpoints verifies."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, text, update
from sqlalchemy.exc import DBAPIError

from grantflow import audit
from grantflow.audit import checkpoints
from grantflow.audit.keys import derive, sign
from grantflow.audit.log import _canonical
from grantflow.audit.models import AuditEntry
from grantflow.audit.writer import CheckpointWriter
from grantflow.auth.actor import Actor
from grantflow.config import Settings, load_settings
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.audit import entries, rolled_back, triggers_off, verify
from tests.support.target import Reply, running_target

TRIGGERS_GONE = "the triggers that keep the log append-only are not in place: "


def _history(admin: httpx.Client, *names: str) -> None:
    """Applications created through the API: one audit entry each."""
    for name in names:
        response = admin.post("/api/v1/applications", json={"name": name})
        assert response.status_code == 201, response.text


def _checkpoint(database: Database, settings: Settings, path: Path) -> checkpoints.Checkpoint:
    taken, deliveries = checkpoints.write(database, settings, path)
    assert [d.error for d in deliveries] == [None]
    return taken


def _verify_over_http(admin: httpx.Client, path: Path) -> dict[str, Any]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    response = admin.post("/api/v1/audit/verify", json={"checkpoints": lines})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_truncate_is_refused(api: Api, admin: httpx.Client) -> None:
    """TRUNCATE (PostgreSQL) and a whole-table DELETE (SQLite) fail; nothing is lost."""
    _history(admin, "Wiki", "Chat")
    before = entries(api.database)
    statement = (
        "TRUNCATE audit_entries"
        if api.database.dialect == "postgresql"
        else ("DELETE FROM audit_entries")
    )
    with pytest.raises(DBAPIError, match="append-only"), api.database.transaction() as session:
        session.execute(text(statement))
    assert [e.hash for e in entries(api.database)] == [e.hash for e in before]
    assert verify(api.database).ok


@pytest.mark.parametrize("then_appended", [0, 3], ids=["tail-gone", "tail-replaced"])
def test_newest_entries_deleted_with_triggers_bypassed_are_caught_by_a_checkpoint(
    api: Api, admin: httpx.Client, settings: Settings, tmp_path: Path, then_appended: int
) -> None:
    """Deleting the newest entries with the triggers bypassed (replica role) passes verify alone
    but not against an earlier checkpoint, in code and over HTTP, even once new entries follow."""
    _history(admin, "Wiki", "Payroll", "Chat")
    saved = tmp_path / "checkpoints.jsonl"
    taken = _checkpoint(api.database, settings, saved)
    newest = [e.id for e in entries(api.database)[-2:]]
    with triggers_off(api.database) as session:
        session.execute(delete(AuditEntry).where(AuditEntry.id.in_(newest)))
    _history(admin, *(f"Later {n}" for n in range(then_appended)))

    alone = verify(api.database)
    assert alone.ok  # what the database alone cannot show
    assert alone.missing_triggers == ()
    report = verify(api.database, checkpoints.load(saved))
    assert not report.ok
    if then_appended:
        assert report.first_broken_id == entries(api.database)[taken.entries - 1].id
        assert "recorded differently: the chain was rewritten or rebuilt since" in (
            report.reason or ""
        )
    else:
        assert report.reason == (
            f"the log holds {taken.entries - 2} entries but the checkpoint of {taken.at_text} "
            f"({saved} line 1) recorded {taken.entries}: entries were removed from its end"
        )
    body = _verify_over_http(admin, saved)
    assert body["ok"] is False
    assert body["checkpoints_checked"] == 0


def _take_away_triggers(database: Database, how: str) -> list[str]:
    """SQL that removes or neutralises the append-only triggers, and what verify should say."""
    if database.dialect == "sqlite":
        if how == "drop":
            return [
                "DROP TRIGGER audit_entries_no_update",
                "DROP TRIGGER audit_entries_no_delete",
            ]
        if how == "neutralise":
            return [
                "DROP TRIGGER audit_entries_no_delete",
                "CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries "
                "BEGIN SELECT 1; END",
            ]
        pytest.skip("SQLite triggers cannot be disabled, only dropped")
    return {
        "drop": [
            "DROP TRIGGER audit_entries_append_only ON audit_entries",
            "DROP TRIGGER audit_entries_no_truncate ON audit_entries",
        ],
        "disable": ["ALTER TABLE audit_entries DISABLE TRIGGER audit_entries_no_truncate"],
        "neutralise": [
            "CREATE OR REPLACE FUNCTION grantflow_audit_append_only() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN RETURN OLD; END $$"
        ],
    }[how]


EXPECTED_MISSING = {
    ("sqlite", "drop"): ["audit_entries_no_update (missing)", "audit_entries_no_delete (missing)"],
    ("sqlite", "neutralise"): ["audit_entries_no_delete (no longer refuses)"],
    ("postgresql", "drop"): [
        "audit_entries_append_only (missing)",
        "audit_entries_no_truncate (missing)",
    ],
    ("postgresql", "disable"): ["audit_entries_no_truncate (disabled)"],
    ("postgresql", "neutralise"): [
        "audit_entries_append_only (its function no longer refuses)",
        "audit_entries_no_truncate (its function no longer refuses)",
    ],
}


@pytest.mark.parametrize("how", ["drop", "disable", "neutralise"])
def test_triggers_taken_away_are_detected(api: Api, admin: httpx.Client, how: str) -> None:
    """Dropping, disabling or neutralising an append-only trigger makes verify fail naming it,
    although every entry is intact."""
    _history(admin, "Wiki")
    statements = _take_away_triggers(api.database, how)
    with rolled_back(api.database) as session:
        for statement in statements:
            session.execute(text(statement))
        report = audit.verify(session)
    expected = EXPECTED_MISSING[(api.database.dialect, how)]
    assert not report.ok
    assert report.first_broken_id is None
    assert report.checked == len(entries(api.database))
    assert list(report.missing_triggers) == expected
    assert report.reason == TRIGGERS_GONE + ", ".join(expected)
    assert verify(api.database).ok  # rolled back: the triggers are in place again


def _forge(database: Database, start: int, how: str, key: bytes | None = None) -> list[AuditEntry]:
    """Rewrite the entry at `start` (its summary) and recompute every later hash the way
    someone without the master key can: SHA-256 as before keying ("sha256"), the pre-keyed
    rule with the key dropped ("unkeyed"), or an HMAC under a key of their own ("own_key")."""
    chain = entries(database)
    previous = chain[start - 1].hash if start else "0" * 64
    forged_key = derive(key or os.urandom(32)).chain
    with triggers_off(database) as session:
        # Move every later hash aside first: the column is unique.
        for entry in chain[start:]:
            session.execute(
                update(AuditEntry).where(AuditEntry.id == entry.id).values(hash=f"x{entry.id}")
            )
        for entry in chain[start:]:
            if entry is chain[start]:
                entry.summary = {**entry.summary, "name": "Forged"}
            entry.prev_hash = previous
            if how == "unkeyed":
                entry.key_id = None
            message = entry.prev_hash + _canonical(entry)
            if how in ("sha256", "unkeyed"):
                entry.hash = hashlib.sha256(message.encode()).hexdigest()
            else:
                entry.hash = sign(forged_key, message)
            session.execute(
                update(AuditEntry)
                .where(AuditEntry.id == entry.id)
                .values(
                    summary=entry.summary,
                    prev_hash=entry.prev_hash,
                    key_id=entry.key_id,
                    hash=entry.hash,
                )
            )
            previous = entry.hash
    return chain


@pytest.mark.parametrize(
    ("how", "start", "reason"),
    [
        ("sha256", 1, "its content does not match its hash"),
        ("own_key", 1, "its content does not match its hash"),
        ("unkeyed", 1, "it has no key although keyed entries come before it"),
        ("unkeyed", 0, "are unkeyed and no keyed entry pins them"),
    ],
    ids=["sha256", "own-key", "key-dropped", "whole-chain-unkeyed"],
)
def test_a_rewritten_entry_with_later_hashes_recomputed_without_the_key_is_detected(
    api: Api, admin: httpx.Client, how: str, start: int, reason: str
) -> None:
    """Rewriting an entry and recomputing every later hash without the master key is caught at
    that entry (or, for a chain rebuilt wholly unkeyed, as a whole), in code and over HTTP."""
    _history(admin, "Wiki", "Payroll", "Chat")
    chain = _forge(api.database, start, how)

    report = verify(api.database)
    assert not report.ok
    assert reason in (report.reason or "")
    body = admin.get("/api/v1/audit/verify").json()
    assert body["ok"] is False
    assert reason in body["reason"]
    if start:
        assert report.first_broken_id == chain[start].id
        assert report.checked == start
        assert body["first_broken_id"] == chain[start].id


def test_a_chain_rewritten_with_the_key_is_caught_by_an_earlier_checkpoint(
    api: Api, admin: httpx.Client, settings: Settings, tmp_path: Path
) -> None:
    """Someone with the key and the database can rebuild a chain that verifies alone; a
    checkpoint written before the rebuild still names the first entry it disagrees with."""
    _history(admin, "Wiki", "Payroll", "Chat")
    saved = tmp_path / "checkpoints.jsonl"
    taken = _checkpoint(api.database, settings, saved)
    chain = _forge(api.database, 2, "own_key", key=api.database.master_keys()[0])

    assert verify(api.database).ok
    report = verify(api.database, checkpoints.load(saved))
    assert not report.ok
    assert report.first_broken_id == chain[taken.entries - 1].id
    assert "the chain was rewritten or rebuilt since" in (report.reason or "")


def _edit_checkpoint(line: dict[str, Any], what: str) -> dict[str, Any]:
    if what == "entries":
        return {**line, "entries": line["entries"] - 1}
    if what == "head":
        return {**line, "head": "f" * 64}
    if what == "at":
        return {**line, "at": "2020-01-01T00:00:00Z"}
    if what == "signature":
        flipped = "0" if line["signature"][0] != "0" else "1"
        return {**line, "signature": flipped + line["signature"][1:]}
    return {**line, "key_id": "0123456789abcdef"}


@pytest.mark.parametrize("what", ["entries", "head", "at", "signature", "key_id"])
def test_a_tampered_checkpoint_is_detected(
    api: Api, admin: httpx.Client, settings: Settings, tmp_path: Path, what: str
) -> None:
    """A checkpoint edited after it was written (any field) fails verification naming it, in
    code and over HTTP, while the untouched log itself still verifies."""
    _history(admin, "Wiki", "Chat")
    saved = tmp_path / "checkpoints.jsonl"
    _checkpoint(api.database, settings, saved)
    line = json.loads(saved.read_text())
    saved.write_text(json.dumps(_edit_checkpoint(line, what)) + "\n")

    report = verify(api.database, checkpoints.load(saved))
    assert not report.ok
    expected = (
        "which is not configured"
        if what == "key_id"
        else "its signature does not match its content (the checkpoint was altered)"
    )
    assert expected in (report.reason or "")
    assert f"({saved} line 1)" in (report.reason or "")
    body = _verify_over_http(admin, saved)
    assert body["ok"] is False
    assert expected in body["reason"]
    assert verify(api.database).ok


@pytest.mark.parametrize(
    ("checkpoint", "message"),
    [
        (
            {"kind": "something else"},
            "checkpoints[0]: not a Grantflow audit checkpoint (kind must be "
            "'grantflow.audit.checkpoint')",
        ),
        ({"kind": checkpoints.KIND, "version": 2}, "checkpoints[0]: version: must be 1"),
        (
            {"kind": checkpoints.KIND, "version": 1, "at": "2024-01-01T00:00:00Z", "entries": "9"},
            "checkpoints[0]: entries: missing or of the wrong type",
        ),
    ],
)
def test_a_malformed_checkpoint_is_a_422_naming_the_field(
    admin: httpx.Client, checkpoint: dict[str, Any], message: str
) -> None:
    """A checkpoint that is not one Grantflow wrote is a 422 naming the item and field."""
    response = admin.post("/api/v1/audit/verify", json={"checkpoints": [checkpoint]})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"] == message


def test_an_honest_log_with_checkpoints_verifies(
    api: Api, admin: httpx.Client, settings: Settings, tmp_path: Path
) -> None:
    """Checkpoints taken as the log grows all agree with it: verify against them passes, in code
    and over HTTP, and counts them."""
    saved = tmp_path / "checkpoints.jsonl"
    _checkpoint(api.database, settings, saved)
    _history(admin, "Wiki", "Payroll")
    _checkpoint(api.database, settings, saved)
    _checkpoint(api.database, settings, saved)  # nothing new: the same head again
    _history(admin, "Chat")

    report = verify(api.database, checkpoints.load(saved))
    assert report.ok, report.reason
    assert report.checkpoints_checked == 3
    assert report.checked == len(entries(api.database))
    body = _verify_over_http(admin, saved)
    assert body["ok"] is True
    assert body["checkpoints_checked"] == 3
    assert body["missing_triggers"] == []


def test_the_periodic_writer_sends_checkpoints_to_a_file_the_log_and_a_webhook(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    """With destinations configured, the writer `serve` and `scheduler` run writes a checkpoint
    at once and again each interval, to every destination; each one verifies."""
    saved = tmp_path / "anchors" / "audit.jsonl"
    with running_target() as siem:
        siem.on("/checkpoints", Reply(204))
        configured = load_settings(
            database_url=settings.database_url,
            secret_key=base64.urlsafe_b64encode(database.master_keys()[0]).decode(),
            audit_checkpoint_file=str(saved),
            audit_checkpoint_log=True,
            audit_checkpoint_url=f"{siem.url}/checkpoints",
            audit_checkpoint_seconds=0.05,
        )
        with database.transaction() as session:
            audit.record(session, Actor.system("test"), "application.created", "application", "a1")
        writer = CheckpointWriter(database, configured)
        writer.start()
        try:
            siem.wait_for_calls("/checkpoints", 2, timeout=120)
        finally:
            writer.stop()
        posted = [checkpoints.parse(call.body, "webhook") for call in siem.calls("/checkpoints")]
    written = checkpoints.load(saved)
    assert len(written) >= 2
    assert {(c.entries, c.head) for c in written + posted} == {(1, entries(database)[0].hash)}
    report = verify(database, written + posted)
    assert report.ok, report.reason
    assert report.checkpoints_checked == len(written) + len(posted)


def test_a_failing_destination_is_reported_and_the_others_still_written(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    """A webhook answering 500 is reported as failed with its status (the token in its URL shown
    nowhere); the file still gets the checkpoint."""
    saved = tmp_path / "audit.jsonl"
    with running_target() as siem:
        siem.on("/checkpoints", Reply(500, {"error": "down"}))
        configured = load_settings(
            database_url=settings.database_url,
            secret_key=base64.urlsafe_b64encode(database.master_keys()[0]).decode(),
            audit_checkpoint_url=f"{siem.url}/checkpoints?token=hook-secret-81",
        )
        taken, deliveries = checkpoints.write(database, configured, saved)
    assert [d.destination for d in deliveries] == [
        f"webhook:{siem.url}/checkpoints?***",
        f"file:{saved}",
    ]
    assert deliveries[0].error == "answered HTTP 500"
    assert deliveries[1].error is None
    assert checkpoints.load(saved) == [checkpoints.parse(taken.to_json(), f"{saved} line 1")]
