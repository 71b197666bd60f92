"""The `grantflow` command line as a user runs it: a subprocess on a SQLite database."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from grantflow.demo import DEMO_ADMIN, DEMO_APPROVER
from tests.support.processes import grantflow_env, json_output, run_grantflow

pytestmark = pytest.mark.acceptance


@dataclass
class Workspace:
    """A SQLite database set up by `grantflow demo --json`, and that first run's output."""

    workdir: Path
    db_file: Path
    demo: dict[str, Any]

    @property
    def env(self) -> dict[str, str]:
        return grantflow_env(
            database_url=f"sqlite:///{self.db_file}", secret_key_file=self.workdir / "secret.key"
        )

    def grantflow(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_grantflow(*args, env=self.env, cwd=self.workdir)

    def copy(self, directory: Path) -> Workspace:
        """The same workspace in another file, for tests that damage it."""
        target = directory / "grantflow.db"
        with sqlite3.connect(self.db_file) as source, sqlite3.connect(target) as copy:
            source.backup(copy)
        return Workspace(self.workdir, target, self.demo)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    workdir = tmp_path_factory.mktemp("cli")
    empty = Workspace(workdir, workdir / "grantflow.db", {})
    return Workspace(workdir, empty.db_file, json_output(empty.grantflow("demo", "--json")))


def test_demo_creates_the_workspace_once(workspace: Workspace) -> None:
    """The first `demo --json` prints a token once; a second run creates nothing, token null
    (and a fresh one-time console sign-in link, as every run)."""
    assert workspace.demo["created"] is True
    assert workspace.demo["admin_email"] == DEMO_ADMIN
    assert workspace.demo["token"].startswith("gft_")
    again = json_output(workspace.grantflow("demo", "--json"))
    assert again.pop("sign_in_url").startswith("http://127.0.0.1:8000/login/link/")
    assert again == {
        "created": False,
        "admin_email": DEMO_ADMIN,
        "token": None,
        "approver_email": DEMO_APPROVER,
        "approver_token": None,
        "onboarding_run_id": None,
    }


def test_tokens_create_list_and_revoke(workspace: Workspace) -> None:
    """A created token is listed without its secret, and shows as revoked after `revoke`."""
    created = json_output(
        workspace.grantflow("tokens", "create", "--user", DEMO_ADMIN, "--name", "ci", "--json")
    )
    assert created["user"] == DEMO_ADMIN
    secret = created["token"]
    assert secret.startswith("gft_")

    listing = workspace.grantflow("tokens", "list", "--user", DEMO_ADMIN, "--json")
    tokens = {t["id"]: t for t in json_output(listing)}
    assert secret not in listing.stdout
    assert workspace.demo["token"] not in listing.stdout
    assert "token" not in tokens[created["token_id"]]
    assert tokens[created["token_id"]]["name"] == "ci"
    assert tokens[created["token_id"]]["revoked_at"] is None

    revoked = json_output(workspace.grantflow("tokens", "revoke", created["token_id"], "--json"))
    assert revoked["id"] == created["token_id"]
    assert revoked["revoked_at"] is not None
    assert secret not in json.dumps(revoked)


def test_users_list_shows_the_demo_admin(workspace: Workspace) -> None:
    """`users list --json` shows the demo admin, active, with the admin role."""
    users = json_output(workspace.grantflow("users", "list", "--json"))
    admin = next(u for u in users if u["email"] == DEMO_ADMIN)
    assert admin["active"] is True
    assert admin["roles"] == ["admin"]


def test_applications_list_shows_the_two_demo_apps(workspace: Workspace) -> None:
    """`applications list --json` shows the two demo applications with their kinds."""
    apps = json_output(workspace.grantflow("applications", "list", "--json"))
    assert {(a["name"], a["kind"]) for a in apps} == {
        ("Workforce identity", "directory"),
        ("Demo Wiki", "saas"),
    }


def test_audit_list_filters_by_action_prefix(workspace: Workspace) -> None:
    """`audit list --action application.*` shows only the two application creations."""
    entries = json_output(
        workspace.grantflow("audit", "list", "--json", "--action", "application.*")
    )
    assert [e["action"] for e in entries] == ["application.created", "application.created"]
    assert all(e["actor"] == "system:demo" for e in entries), entries
    assert entries[0]["id"] > entries[1]["id"]  # newest first


def test_audit_verify_detects_a_tampered_entry(workspace: Workspace, tmp_path: Path) -> None:
    """`audit verify` exits 0 on an intact chain, and 1 naming entry 2 once it was altered."""
    damaged = workspace.copy(tmp_path)
    intact = damaged.grantflow("audit", "verify")
    assert intact.returncode == 0, intact.stderr
    assert "audit chain intact" in intact.stdout

    with sqlite3.connect(damaged.db_file) as conn:
        conn.execute("DROP TRIGGER audit_entries_no_update")
        conn.execute("UPDATE audit_entries SET summary = ? WHERE id = 2", ('{"forged": true}',))

    broken = damaged.grantflow("audit", "verify")
    assert broken.returncode == 1
    assert "audit chain BROKEN at entry 2" in broken.stdout
    assert "1 entries before it verified" in broken.stdout


def test_unknown_user_is_one_error_line_and_a_next_step(workspace: Workspace) -> None:
    """A command naming no user exits 1 with an error line and a next line, no traceback."""
    result = workspace.grantflow("tokens", "create", "--user", "nobody@x.io")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: no user with email nobody@x.io",
        "  next: check `grantflow users list`",
    ]
