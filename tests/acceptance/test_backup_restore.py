"""Backups as the backup guide (docs/how-to/backup.md) takes them: `grantflow backup` and
`grantflow restore` on SQLite while Grantflow runs with a run in flight, and `pg_dump -Fc` /
`pg_restore` on PostgreSQL. After a restore, runs go on, the audit chain verifies and the
encrypted credentials open again — with the key file, and only with it."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from grantflow.access.applications import ApplicationCreate, create_application
from grantflow.auth.actor import Actor
from grantflow.config import new_key, write_key_file
from grantflow.connections.crypto import Keyring, key_id
from grantflow.connections.schemas import ConnectionCreate
from grantflow.connections.service import create_connection, set_credential
from grantflow.definitions.workflows import apply_document
from grantflow.engine import detail, operations
from grantflow.engine.runs import start_run
from grantflow.queue.database import DatabaseQueue
from grantflow.store.database import Database, open_database
from tests.support.databases import PostgresRun
from tests.support.processes import grantflow_env, json_output, poll, run_grantflow, serving
from tests.support.services import service_missing
from tests.support.target import Reply, Seen, Target, running_target

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(900)]
ACTOR = Actor.system("test")
SECRET = "crm-token-4711"
WORKFLOW = "Create CRM account"


@dataclass
class Workspace:
    """A directory, its key file, a database URL and the environment that names them."""

    root: Path
    key: bytes
    url: str

    @property
    def key_file(self) -> Path:
        return self.root / "secret.key"

    def env(self, **overrides: str | Path) -> dict[str, str]:
        values: dict[str, str | Path] = {"database_url": self.url, "secret_key_file": self.key_file}
        return grantflow_env(**(values | overrides))

    def grantflow(self, *args: str, **overrides: str | Path) -> subprocess.CompletedProcess[str]:
        return run_grantflow(*args, env=self.env(**overrides), cwd=self.root, timeout=180)

    def open(self, url: str | None = None) -> Database:
        db = open_database(make_url(url or self.url))
        db.use_master_keys(lambda: [self.key])
        return db


def _workspace(root: Path, url: str) -> Workspace:
    key = new_key()
    write_key_file(root / "secret.key", [key])
    return Workspace(root, key, url)


def _crm(target: Target, held: threading.Event | None) -> None:
    """The CRM: accounts and notices need its bearer token; the first account call waits for
    `held` (the run is in flight meanwhile)."""

    def answer(seen: Seen) -> Reply:
        if seen.headers.get("authorization") != f"Bearer {SECRET}":
            return Reply(401, {"error": "bad token"})
        first = len(target.calls("/accounts")) == 1
        hold = held if first and seen.path.startswith("/accounts") else None
        return Reply(201, {"id": "acc-1"}, hold=hold)

    for path in ("/accounts", "/notices", "/health"):
        target.respond(path, answer)


def _seed(db: Database, key: bytes, target_url: str) -> str:
    """The CRM application, its connection with an encrypted credential, and a published
    two-call workflow; its id."""
    keyring = Keyring(lambda: [key])
    document = {
        "name": WORKFLOW,
        "application": "CRM",
        "trigger": {"type": "manual"},
        "steps": [
            {
                "id": "account",
                "type": "http",
                "config": {"connection": "crm", "method": "POST", "path": "/accounts"},
                "next": "notice",
            },
            {
                "id": "notice",
                "type": "http",
                "config": {"connection": "crm", "method": "POST", "path": "/notices"},
            },
        ],
    }
    with db.transaction() as session:
        app = create_application(session, ACTOR, ApplicationCreate(name="CRM"))
        spec = {"name": "crm", "base_url": target_url, "auth_kind": "bearer"}
        spec["health_check"] = {"path": "/health"}  # type: ignore[assignment]
        connection = create_connection(
            session, ACTOR, app.id, ConnectionCreate.model_validate(spec)
        )
        set_credential(session, ACTOR, keyring, connection.id, {"token": SECRET})
        return apply_document(session, ACTOR, document, publish_it=True).workflow.id


def _start(db: Database, workflow_id: str) -> str:
    with db.transaction() as session:
        return start_run(session, ACTOR, DatabaseQueue(db), workflow_id, {}).id


def _status(db: Database, run_id: str) -> str:
    with db.transaction() as session:
        shown = detail.run_detail(session, operations.get_run(session, run_id), DatabaseQueue(db))
    status: str = shown["status"]
    return status


def _wait_status(db: Database, run_id: str, status: str) -> None:
    poll(lambda: _status(db, run_id) == status, timeout=120, what=f"run {run_id} {status}")


@pytest.fixture
def crm() -> Iterator[Target]:
    with running_target() as target:
        yield target


def test_a_sqlite_backup_taken_mid_run_restores_and_the_run_completes(
    tmp_path: Path, crm: Target
) -> None:
    """A backup taken while `grantflow serve` holds a run mid-call restores into a new
    database; there the run resumes, re-sending the call with the same idempotency key and the
    decrypted credential, and succeeds; the audit chain verifies and records the restore."""
    ws = _workspace(tmp_path, f"sqlite:///{tmp_path / 'grantflow.db'}")
    json_output(ws.grantflow("migrate", "--json"))
    db = ws.open()
    held = threading.Event()
    _crm(crm, held)
    run_id = _start(db, _seed(db, ws.key, crm.url))
    backup = tmp_path / "grantflow-backup.db"
    try:
        with serving(ws.env(), tmp_path):
            crm.wait_for_calls("/accounts", 1)  # the run is in flight, its call unanswered
            taken = ws.grantflow("backup", "--to", str(backup), "--json")
            made = json_output(taken)
            assert made["counts"]["runs"] == 1
            assert made["counts"]["credentials"] == 1
            assert made["key_ids"] == [key_id(ws.key)]
            assert "KEEP A COPY OF THE MASTER KEY" in taken.stderr
            assert str(ws.key_file.resolve()) in taken.stderr
            # a restore over the database Grantflow is running on is refused
            refused = ws.grantflow("restore", "--from", str(backup), "--replace")
            assert refused.returncode == 1
            assert "Grantflow is running on" in refused.stderr
            again = ws.grantflow("backup", "--to", str(backup))
            assert again.returncode == 1
            assert "already exists" in again.stderr
            held.set()
            _wait_status(db, run_id, "succeeded")
    finally:
        held.set()
        db.dispose()
    assert sorted(p.name for p in tmp_path.glob("*backup*")) == [backup.name]  # no partial

    restored_url = f"sqlite:///{tmp_path / 'restored.db'}"
    # without the key file, the restore is refused, and no new key is made up
    lost = ws.grantflow(
        "restore", "--from", str(backup), database_url=restored_url, secret_key_file=tmp_path / "k"
    )
    assert lost.returncode == 2
    assert "every credential in the backup is lost" in lost.stderr
    assert not (tmp_path / "k").exists()
    assert not (tmp_path / "restored.db").exists()

    done = json_output(
        ws.grantflow("restore", "--from", str(backup), "--json", database_url=restored_url)
    )
    assert (done["counts"]["runs"], done["audit_recorded"]) == (1, True)
    verified = json_output(ws.grantflow("audit", "verify", "--json", database_url=restored_url))
    assert verified["ok"] is True, verified
    entries = json_output(
        ws.grantflow(
            "audit", "list", "--action", "database.restored", "--json", database_url=restored_url
        )
    )
    assert len(entries) == 1

    restored = ws.open(restored_url)
    try:
        assert _status(restored, run_id) == "running"  # as it was when the backup was taken
        with serving(ws.env(database_url=restored_url), tmp_path):
            _wait_status(restored, run_id, "succeeded")  # once the old worker's lease expires
    finally:
        restored.dispose()
    first, resent = crm.calls("/accounts")
    assert first.idempotency_key == resent.idempotency_key
    assert resent.headers["authorization"] == f"Bearer {SECRET}"
    assert len(crm.calls("/notices")) == 2  # the original run's, and the restored run's


def test_a_backup_that_is_not_one_is_refused(tmp_path: Path) -> None:
    """Restoring a file that is not a Grantflow SQLite backup names what is wrong and changes
    nothing; backing up PostgreSQL names the pg_dump command instead."""
    ws = _workspace(tmp_path, f"sqlite:///{tmp_path / 'grantflow.db'}")
    junk = tmp_path / "junk.db"
    junk.write_text("not a database")
    refused = ws.grantflow("restore", "--from", str(junk))
    assert refused.returncode == 1
    assert "cannot be read as a SQLite database" in refused.stderr
    assert not (tmp_path / "grantflow.db").exists()
    postgres = ws.grantflow(
        "backup",
        "--to",
        str(tmp_path / "x.db"),
        database_url="postgresql://postgres@127.0.0.1:5432/grantflow",
    )
    assert postgres.returncode == 2
    assert "pg_dump -Fc -d 'postgresql://postgres@127.0.0.1:5432/grantflow'" in postgres.stderr
    # the options only Grantflow and its driver read are left out (libpq refuses them)
    options = ws.grantflow(
        "backup",
        "--to",
        str(tmp_path / "x.db"),
        database_url="postgresql://postgres@127.0.0.1:5432/grantflow"
        "?prepare_threshold=none&flush_every_step=true&sslmode=disable",
    )
    assert options.returncode == 2
    assert (
        "pg_dump -Fc -d 'postgresql://postgres@127.0.0.1:5432/grantflow?sslmode=disable'"
        in options.stderr
    )


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        service_missing(name, "the PostgreSQL client tools are not installed")
    return path


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.mark.postgres
def test_pg_dump_and_pg_restore_bring_back_runs_audit_and_credentials(
    tmp_path: Path, crm: Target
) -> None:
    """The guide's PostgreSQL procedure: pg_dump -Fc, pg_restore into a fresh database,
    `grantflow migrate`; then the run history is there, `audit verify` passes, the connection's
    credential opens with the key file (a replayed run calls the CRM with it), and without
    the key file the credential and the chain are named as unreadable."""
    source, fresh = PostgresRun(), PostgresRun()
    source.create(migrated=False)
    fresh.create(migrated=False)
    try:
        ws = _workspace(tmp_path, source.url.render_as_string(hide_password=False))
        json_output(ws.grantflow("migrate", "--json"))
        db = ws.open()
        _crm(crm, None)
        try:
            run_id = _start(db, _seed(db, ws.key, crm.url))
            with serving(ws.env(), tmp_path):
                _wait_status(db, run_id, "succeeded")
        finally:
            db.dispose()
        dump = tmp_path / "grantflow.dump"
        url = _libpq(ws.url)
        subprocess.run([_tool("pg_dump"), "-Fc", "-d", url, "-f", str(dump)], check=True)
        fresh_url = fresh.url.render_as_string(hide_password=False)
        subprocess.run(
            [
                _tool("pg_restore"),
                "--no-owner",
                "--exit-on-error",
                "-d",
                _libpq(fresh_url),
                str(dump),
            ],
            check=True,
        )
        migrated = json_output(ws.grantflow("migrate", "--json", database_url=fresh_url))
        assert migrated["from"] == migrated["to"]  # the dump carried the schema revision
        runs = json_output(ws.grantflow("runs", "list", "--json", database_url=fresh_url))
        assert [(r["id"], r["status"]) for r in runs] == [(run_id, "succeeded")]
        verified = json_output(ws.grantflow("audit", "verify", "--json", database_url=fresh_url))
        assert verified["ok"] is True, verified
        tested = json_output(
            ws.grantflow("connections", "test", "CRM", "crm", "--json", database_url=fresh_url)
        )
        assert tested["ok"] is True, tested
        replay = json_output(
            ws.grantflow("runs", "replay", run_id, "--json", database_url=fresh_url)
        )
        restored = ws.open(fresh_url)
        try:
            with serving(ws.env(database_url=fresh_url), tmp_path):
                _wait_status(restored, replay["id"], "succeeded")
        finally:
            restored.dispose()
        assert [c.headers["authorization"] for c in crm.calls("/accounts")] == [
            f"Bearer {SECRET}"
        ] * 2

        other_key = tmp_path / "other.key"  # a key file that is not the one of the backup
        write_key_file(other_key, [new_key()])
        broken = ws.grantflow(
            "connections", "test", "CRM", "crm", database_url=fresh_url, secret_key_file=other_key
        )
        assert broken.returncode != 0
        assert f"encrypted under master key {key_id(ws.key)}" in broken.stdout + broken.stderr
        chain = ws.grantflow(
            "audit", "verify", "--json", database_url=fresh_url, secret_key_file=other_key
        )
        assert json.loads(chain.stdout)["ok"] is False
    finally:
        source.drop()
        fresh.drop()
