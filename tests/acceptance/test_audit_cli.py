"""`grantflow audit checkpoint | verify --against` and the upgrade of a pre-keyed audit log, as
an operator runs them (subprocesses)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from grantflow import audit
from grantflow.audit import checkpoints
from grantflow.audit.models import AuditEntry
from grantflow.auth.actor import Actor
from grantflow.config import load_settings
from grantflow.store import migrate
from grantflow.store.database import Database, open_database
from tests.support.audit import SQLITE_TRIGGERS, triggers_off
from tests.support.databases import PostgresRun
from tests.support.processes import grantflow_env, json_output, run_grantflow

# Each command is a fresh interpreter: allow for a loaded machine.
pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(300)]


class Site:
    """A database and the environment every command gets (one master key)."""

    def __init__(self, url: str, workdir: Path, **settings: str | Path) -> None:
        self.url = url
        self.workdir = workdir
        self.key = os.urandom(32)
        secret = base64.urlsafe_b64encode(self.key).decode()
        self.env = grantflow_env(database_url=url, secret_key=secret, **settings)

    def grantflow(self, *args: str) -> Any:
        return run_grantflow(*args, env=self.env, cwd=self.workdir)

    def database(self) -> Database:
        db = open_database(make_url(self.url))
        db.use_master_keys(lambda: [self.key])
        return db


@pytest.fixture
def site(tmp_path: Path) -> Site:
    """A migrated SQLite database with five audit entries, checkpoints configured to a file."""
    made = Site(
        f"sqlite:///{tmp_path / 'gf.db'}",
        tmp_path,
        audit_checkpoint_file=tmp_path / "anchors" / "audit.jsonl",
    )
    db = made.database()
    migrate.upgrade(db)
    with db.transaction() as session:
        for n in range(5):
            audit.record(
                session, Actor.system("test"), "application.created", "application", f"a{n}"
            )
    db.dispose()
    return made


def _sqlite(site: Site) -> sqlite3.Connection:
    return sqlite3.connect(make_url(site.url).database or "")


def test_checkpoint_then_a_deleted_tail_fails_verify_against_it(site: Site) -> None:
    """`audit checkpoint` writes a signed line to the configured file; after the newest entries
    are deleted behind the triggers' back `verify --against` it exits 1 saying entries were
    removed."""
    result = json_output(site.grantflow("audit", "checkpoint", "--json"))
    anchors = site.workdir / "anchors" / "audit.jsonl"
    assert result["written_to"] == [f"file:{anchors}"]
    assert result["failed"] == []
    assert result["checkpoint"]["entries"] == 5
    assert json.loads(anchors.read_text()) == result["checkpoint"]

    with _sqlite(site) as conn:
        for verb in SQLITE_TRIGGERS:
            conn.execute(f"DROP TRIGGER audit_entries_no_{verb.lower()}")
        conn.execute("DELETE FROM audit_entries WHERE id > 3")
        for sql in SQLITE_TRIGGERS.values():
            conn.execute(sql)

    caught = site.grantflow("audit", "verify", "--against", str(anchors))
    assert caught.returncode == 1
    assert "audit chain BROKEN: the log holds 3 entries but the checkpoint of" in caught.stdout
    assert "recorded 5: entries were removed from its end" in caught.stdout


def test_checkpoint_without_a_destination_prints_it_and_says_how_to_keep_it(
    site: Site, tmp_path: Path
) -> None:
    """With no destination configured `audit checkpoint` prints the signed line and names the
    settings; `--to FILE` writes FILE, which `verify --against` accepts."""
    del site.env["GRANTFLOW_AUDIT_CHECKPOINT_FILE"]
    printed = site.grantflow("audit", "checkpoint")
    assert printed.returncode == 0, printed.stderr
    line = json.loads(printed.stdout.splitlines()[0])
    assert (line["kind"], line["entries"]) == ("grantflow.audit.checkpoint", 5)
    assert "no destination configured (GRANTFLOW_AUDIT_CHECKPOINT_FILE" in printed.stdout
    target = tmp_path / "by-hand.jsonl"
    to_file = site.grantflow("audit", "checkpoint", "--to", str(target))
    assert to_file.returncode == 0
    assert f"file:{target}: written" in to_file.stdout
    db = site.database()
    try:
        with db.transaction() as session:
            report = audit.verify(session, checkpoints.load(target))
    finally:
        db.dispose()
    assert (report.ok, report.checkpoints_checked) == (True, 1)


def test_verify_names_a_tampered_checkpoint_and_a_dropped_trigger(site: Site) -> None:
    """`verify --against` exits 1 naming a checkpoint whose count was edited; `verify` exits 1
    naming a dropped trigger."""
    db = site.database()
    taken, _ = checkpoints.write(
        db, load_settings(database_url=site.url, secret_key_file=site.workdir / "k")
    )
    db.dispose()
    forged = site.workdir / "forged.jsonl"
    forged.write_text(json.dumps({**taken.to_json(), "entries": 9}) + "\n")
    refused = site.grantflow("audit", "verify", "--against", str(forged))
    assert refused.returncode == 1
    assert f"({forged} line 1): its signature does not match its content" in refused.stdout

    with _sqlite(site) as conn:
        conn.execute("DROP TRIGGER audit_entries_no_delete")
    dropped = site.grantflow("audit", "verify")
    assert dropped.returncode == 1
    assert (
        "audit chain BROKEN: the triggers that keep the log append-only are not in place: "
        "audit_entries_no_delete (missing)"
    ) in dropped.stdout


# --- upgrading a log written before the chain was keyed ----------------------------------------


def _legacy_hash(prev: str, row: dict[str, Any]) -> str:
    """The rule of revision 0007: SHA-256 of the previous hash and the canonical content."""
    content = {k: row[k] for k in ("actor_id", "actor", "action", "target_type", "target_id")}
    content |= {
        "at": row["at"].isoformat(),
        "summary": row["summary"],
        "request_id": row["request_id"],
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((prev + canonical).encode()).hexdigest()


def _legacy_rows(count: int) -> list[dict[str, Any]]:
    rows, prev = [], "0" * 64
    for n in range(count):
        row: dict[str, Any] = {
            "at": dt.datetime(2024, 5, 1, 12, n, tzinfo=dt.UTC),
            "actor_id": None,
            "actor": "system:cli",
            "action": "application.created",
            "target_type": "application",
            "target_id": f"app-{n}",
            "summary": {"name": f"App {n}"},
            "request_id": None,
            "prev_hash": prev,
        }
        row["hash"] = prev = _legacy_hash(prev, row)
        rows.append(row)
    return rows


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def old_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database at revision 0007 holding three audit entries written by the unkeyed rule."""
    if request.param == "sqlite":
        db = open_database(make_url(f"sqlite:///{tmp_path / 'old.db'}"))
        run = None
    else:
        run = PostgresRun()
        run.create(migrated=False)
        db = open_database(run.url)
    migrate.upgrade(db, "0007")
    old_table = sa.Table(
        "audit_entries",
        sa.MetaData(),
        *[
            sa.Column(c.name, c.type, primary_key=c.primary_key)
            for c in AuditEntry.__table__.columns
            if c.name != "key_id"
        ],
    )
    with db.engine.begin() as conn:
        conn.execute(old_table.insert(), _legacy_rows(3))
    try:
        yield db
    finally:
        db.dispose()
        if run is not None:
            run.drop()


def test_migrate_pins_the_unkeyed_entries_and_later_edits_to_them_are_caught(
    old_database: Database, tmp_path: Path
) -> None:
    """`grantflow migrate` keys the chain: the entries from before verify by the old rule up to
    an `audit.chain_keyed` entry that pins them; an edit to one of them with the later unkeyed
    hashes recomputed is caught there."""
    site = Site(old_database.url.render_as_string(hide_password=False), tmp_path)
    assert json_output(site.grantflow("migrate", "--json"))["from"] == "0007"
    report = json_output(site.grantflow("audit", "verify", "--json"))
    assert report == {
        "ok": True,
        "checked": 4,
        "first_broken_id": None,
        "reason": None,
        "legacy_entries": 3,
        "missing_triggers": [],
        "checkpoints_checked": 0,
    }
    with old_database.engine.connect() as conn:
        keyed = conn.execute(
            sa.select(AuditEntry.action, AuditEntry.summary).where(AuditEntry.key_id.is_not(None))
        ).all()
    assert [tuple(row) for row in keyed] == [("audit.chain_keyed", {"legacy_entries": 3})]

    rows = _legacy_rows(3)
    rows[1]["summary"] = {"name": "Forged"}
    prev = rows[0]["hash"]
    with triggers_off(old_database) as session:
        ids = list(session.execute(sa.select(AuditEntry.id).order_by(AuditEntry.id)).scalars())
        for row_id, row in zip(ids[1:3], rows[1:], strict=True):
            row["prev_hash"] = prev
            prev = _legacy_hash(prev, row)
            session.execute(
                sa.update(AuditEntry)
                .where(AuditEntry.id == row_id)
                .values(summary=row["summary"], prev_hash=row["prev_hash"], hash=prev)
            )
    broken = site.grantflow("audit", "verify")
    assert broken.returncode == 1
    assert f"audit chain BROKEN at entry {ids[3]}: its prev_hash does not match" in broken.stdout
