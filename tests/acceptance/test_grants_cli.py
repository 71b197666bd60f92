"""`grantflow grants`, `grantflow incidents` and `grantflow runs note | evidence` as a user runs
them: subprocesses on a SQLite file. The application, its connection, an identity and the revoke
workflow are set up in-process; a worker in this process runs the revoke workflows."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from grantflow.access import grants
from grantflow.access.applications import ApplicationCreate, create_application
from grantflow.access.identities import IdentityCreate, create_identity
from grantflow.auth.actor import Actor
from grantflow.connections.schemas import ConnectionCreate
from grantflow.connections.service import create_connection
from grantflow.queue.database import DatabaseQueue
from grantflow.store.database import Database
from tests.support.databases import sqlite_copy
from tests.support.engine import publish, running_worker, wait_status
from tests.support.processes import grantflow_env, json_output, run_grantflow
from tests.support.target import Reply, Target, running_target

pytestmark = pytest.mark.acceptance

ACTOR = Actor.system("test")
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@dataclass
class Workspace:
    workdir: Path
    db_file: Path
    database: Database
    target: Target

    @property
    def env(self) -> dict[str, str]:
        return grantflow_env(
            database_url=f"sqlite:///{self.db_file}",
            secret_key_file=self.workdir / "secret.key",
            evidence_max_bytes="2048",
        )

    def grantflow(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_grantflow(*args, env=self.env, cwd=self.workdir)

    def json(self, *args: str) -> Any:
        return json_output(self.grantflow(*args, "--json"))

    def refused(self, *args: str) -> list[str]:
        """A command that must fail: exit 1, nothing on stdout, its stderr lines."""
        result = self.grantflow(*args)
        assert result.returncode == 1, f"exit {result.returncode}\n{result.stdout}{result.stderr}"
        assert result.stdout == ""
        assert "Traceback" not in result.stderr
        return result.stderr.splitlines()


@pytest.fixture
def workspace(_sqlite_template: Path, tmp_path: Path) -> Iterator[Workspace]:
    """CRM (an http connection to a scripted server whose /revoke is down), the identity
    ada@example.com and a published access_revoked workflow calling /revoke, no retries."""
    database = sqlite_copy(_sqlite_template, tmp_path)
    with running_target() as target:
        target.on("/revoke", Reply(503, {"error": "maintenance"}))
        with database.transaction() as session:
            app = create_application(session, ACTOR, ApplicationCreate(name="CRM"))
            create_connection(
                session,
                ACTOR,
                app.id,
                ConnectionCreate.model_validate({"name": "crm", "base_url": target.url}),
            )
            create_identity(
                session, ACTOR, DatabaseQueue(database), IdentityCreate(email="ada@example.com")
            )
            app_id = app.id
        step = {"method": "POST", "connection": "crm", "path": "/revoke"}
        publish(
            database,
            {
                "name": "CRM revoke",
                "application": app_id,
                "trigger": {"type": "access_revoked"},
                "steps": [{"id": "remove_user", "type": "http", "config": step}],
            },
        )
        yield Workspace(tmp_path, tmp_path / "grantflow.db", database, target)
    database.dispose()


def test_grant_list_show_extend_and_revoke(workspace: Workspace) -> None:
    granted = workspace.json(
        "grants",
        "grant",
        "--identity",
        "ada@example.com",
        "--application",
        "crm",
        "--role",
        "editor",
        "--justification",
        "quarterly reporting",
        "--expires-at",
        "2099-01-31T17:00:00",  # no zone: UTC
    )
    assert granted["status"] == "active"
    assert granted["identity"]["email"] == "ada@example.com"
    assert granted["application"]["name"] == "CRM"
    assert granted["role"] == "editor"
    assert granted["expires_at"] == "2099-01-31T17:00:00Z"
    assert granted["granted_by"] == "system:cli"
    assert granted["automation"]["state"] == "none"
    assert "its trigger is access_revoked" in granted["automation"]["no_run_reason"]
    grant_id = granted["id"]

    again = workspace.refused(
        "grants",
        "grant",
        "--identity",
        "ada@example.com",
        "--application",
        "CRM",
        "--role",
        "editor",
    )
    assert again == [
        f"error: ada@example.com already has active access to 'CRM' as 'editor': grant {grant_id}",
        "  next: use the existing grant (extend its expiry if needed)",
    ]

    listed = workspace.json("grants", "list", "--identity", "ada@example.com", "--status", "active")
    assert [g["id"] for g in listed] == [grant_id]
    chip = ("grants", "list", "--identity", "ada@example.com", "--automation")
    assert [g["id"] for g in workspace.json(*chip, "none")] == [grant_id]  # no workflow ran
    assert workspace.json(*chip, "needs_attention") == []
    assert workspace.refused(*chip, "broken") == [
        "error: the request is not valid: query.automation: must be one of none, pending, "
        "synced, needs_attention, not 'broken'"
    ]

    extended = workspace.json(
        "grants", "extend", grant_id, "--expires-at", "never", "--comment", "permanent role"
    )
    assert extended["expires_at"] is None
    bad = workspace.refused("grants", "extend", grant_id, "--expires-at", "next tuesday")
    assert bad == [
        "error: --expires-at: 'next tuesday' is not an ISO 8601 time (e.g. 2030-01-31T17:00:00Z)"
    ]

    revoked = workspace.json("grants", "revoke", grant_id, "--comment", "project over")
    assert revoked["status"] == "revoked"
    assert revoked["revoke_reason"] == "manual"
    assert revoked["revoke_comment"] == "project over"
    assert revoked["automation"]["state"] == "pending"  # queued for a worker
    [run] = revoked["automation"]["runs"]
    assert [e["kind"] for e in revoked["events"]] == ["access_granted", "access_revoked"]

    shown = workspace.grantflow("grants", "show", grant_id)
    assert shown.returncode == 0, shown.stderr
    assert f"grant {grant_id}  ada@example.com -> CRM as editor  revoked" in shown.stdout
    assert "by system:cli (manual)" in shown.stdout
    assert f"run {run['id']}  queued" in shown.stdout


def test_a_failed_revocation_is_resolved_with_evidence_from_the_cli(
    workspace: Workspace, tmp_path: Path
) -> None:
    with workspace.database.transaction() as session:
        grant = grants.create_grant(
            session,
            ACTOR,
            DatabaseQueue(workspace.database),
            grants.GrantCreate(identity="ada@example.com", application="CRM"),
        )
        grant_id = grant.id
    revoked = workspace.json("grants", "revoke", grant_id)
    run_id = revoked["automation"]["runs"][0]["id"]
    with running_worker(workspace.database):
        wait_status(workspace.database, run_id, "failed")

    [incident] = workspace.json("incidents", "list", "--status", "open")
    assert incident["identity"] == "ada@example.com"
    assert incident["system"] == "CRM"
    assert incident["step_id"] == "remove_user"
    assert incident["run_id"] == run_id
    assert incident["instruction"].startswith("Revoke ada@example.com's access in CRM by hand now.")
    shown = workspace.json("incidents", "show", incident["id"][:13])
    assert (shown["id"], shown["status"], shown["run_id"]) == (incident["id"], "open", run_id)

    refused = workspace.refused("incidents", "resolve", incident["id"])
    assert refused[0] == (
        f"error: incident {incident['id']} cannot be resolved yet: run {run_id} has no "
        "evidence file and has not succeeded"
    )
    assert f"`grantflow runs evidence add {run_id} FILE`" in refused[1]

    note = workspace.json("runs", "note", run_id, "Removed ada from CRM by hand (IT-42).")
    assert note["kind"] == "note"
    assert note["note"] == "Removed ada from CRM by hand (IT-42)."

    tool = tmp_path / "tool.exe"
    tool.write_bytes(b"MZ\x90\x00")
    exe = workspace.refused(
        "runs", "evidence", "add", run_id, str(tool), "--content-type", "application/x-msdownload"
    )
    assert exe[0].startswith(
        "error: file: content type 'application/x-msdownload' is not accepted; use one of "
    )

    big = tmp_path / "big.png"
    big.write_bytes(PNG * 2)
    assert workspace.refused("runs", "evidence", "add", run_id, str(big)) == [
        "error: file: big.png is larger than the 2048 bytes allowed for evidence",
        "  next: attach a smaller file, or raise GRANTFLOW_EVIDENCE_MAX_BYTES",
    ]

    proof = tmp_path / "crm-users.png"
    proof.write_bytes(PNG)
    added = workspace.json("runs", "evidence", "add", run_id, str(proof), "--note", "user list")
    assert added["filename"] == "crm-users.png"
    assert added["content_type"] == "image/png"  # from the file name
    assert added["size"] == len(PNG)
    assert added["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert added["created_by"] == "system:cli"

    listed = workspace.json("runs", "evidence", "list", run_id)  # the refused file left nothing
    assert [(e["id"], e["kind"]) for e in listed] == [(note["id"], "note"), (added["id"], "file")]

    copy = tmp_path / "downloaded.png"
    got = workspace.json("runs", "evidence", "download", run_id, added["id"], "-o", str(copy))
    assert copy.read_bytes() == PNG
    assert got["sha256"] == added["sha256"]
    assert got["output"] == str(copy)

    resolved = workspace.json("incidents", "resolve", incident["id"], "--comment", "see IT-42")
    assert resolved["status"] == "resolved"
    assert resolved["resolution"] == "evidence"
    assert resolved["resolved_by"] == "system:cli"
    # the CRM never saw a second call: only the run's one attempt
    assert len(workspace.target.calls("/revoke")) == 1
