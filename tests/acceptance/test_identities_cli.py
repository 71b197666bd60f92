"""`grantflow identities ...` as a user runs it: a subprocess on a SQLite database."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import grantflow_env, json_output, run_grantflow

pytestmark = pytest.mark.acceptance


@dataclass
class Workspace:
    workdir: Path

    @property
    def env(self) -> dict[str, str]:
        return grantflow_env(
            database_url=f"sqlite:///{self.workdir / 'grantflow.db'}",
            secret_key_file=self.workdir / "secret.key",
        )

    def grantflow(self, *args: str) -> subprocess.CompletedProcess[str]:
        # wide enough that tables print emails whole
        return run_grantflow(*args, env={**self.env, "COLUMNS": "200"}, cwd=self.workdir)

    def json(self, *args: str) -> Any:
        return json_output(self.grantflow(*args, "--json"))

    def csv(self, name: str, content: str | bytes) -> str:
        path = self.workdir / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(path)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    space = Workspace(tmp_path_factory.mktemp("identities-cli"))
    json_output(space.grantflow("migrate", "--json"))
    return space


def test_create_show_update_leave_and_events(workspace: Workspace) -> None:
    """The lifecycle from the command line: a join, a move, a leave, and the events of each."""
    ada = workspace.json(
        "identities",
        "create",
        "--email",
        " Ada@Example.com",
        "--given-name",
        "Ada",
        "--family-name",
        "Lovelace",
        "--title",
        "Engineer",
        "--department",
        "Research",
        "--attr",
        "team=core",
    )
    assert (ada["email"], ada["display_name"], ada["lifecycle_state"]) == (
        "ada@example.com",
        "Ada Lovelace",
        "active",
    )
    assert ada["attributes"] == {"team": "core"}

    moved = workspace.json(
        "identities", "update", ada["id"], "--title", "Lead", "--attr", "team=", "--department", ""
    )
    assert moved["changes"] == {
        "title": ["Engineer", "Lead"],
        "department": ["Research", None],
        "attributes": [{"team": "core"}, {}],
    }
    assert moved["department"] is None

    left = workspace.json("identities", "leave", "ada@example.com")
    assert (left["active"], left["lifecycle_state"]) == (False, "left")

    events = workspace.json("identities", "events", "ada@example.com")
    assert [e["kind"] for e in events] == ["identity_joined", "identity_moved", "identity_left"]
    assert all(e["runs"] == [] and e["no_run_reason"] for e in events)
    table = workspace.grantflow("identities", "list", "--state", "left")
    assert table.returncode == 0
    assert "ada@example.com" in table.stdout
    assert "Ada Lovelace" in table.stdout


def test_import_reports_rows_and_exits_3_when_some_are_rejected(workspace: Workspace) -> None:
    """Good rows are imported and a bad one is reported (exit 3); a dry run writes nothing; a
    re-import changes nothing; a clean file exits 0."""
    people = workspace.csv(
        "people.csv",
        "email,display_name,manager,start_date,attr.cost_center\n"
        "kim@example.com,Kim,lee@example.com,2025-01-06,CC-1\n"
        "lee@example.com,Lee,,2024-05-01,CC-2\n"
        "max@example.com,Max,,05/01/2025,\n",
    )
    dry = workspace.grantflow("identities", "import", people, "--dry-run", "--json")
    assert dry.returncode == 3, dry.stderr
    assert json.loads(dry.stdout)["dry_run"] is True

    result = workspace.grantflow("identities", "import", people, "--json")
    assert result.returncode == 3, result.stderr
    report = json.loads(result.stdout)
    assert report["dry_run"] is False  # and the dry run wrote nothing: these are created
    assert report["filename"] == "people.csv"
    assert report["counts"] == {"created": 2, "updated": 0, "unchanged": 0, "rejected": 1}
    rejected = report["results"][2]
    assert (rejected["row"], rejected["email"], rejected["outcome"]) == (
        4,
        "max@example.com",
        "rejected",
    )
    assert rejected["reason"].startswith(
        "start_date: '05/01/2025' is not a valid date; write dates as YYYY-MM-DD"
    )
    kim = workspace.json("identities", "show", "kim@example.com")
    assert kim["manager"] == "lee@example.com"
    assert kim["attributes"] == {"cost_center": "CC-1"}

    text = workspace.grantflow("identities", "import", people)
    assert text.returncode == 3
    assert "3 rows: 0 created, 0 updated, 2 unchanged, 1 rejected" in text.stdout
    assert "start_date: '05/01/2025'" in text.stdout

    clean = workspace.csv("clean.csv", "email,title\nkim@example.com,Engineer\n")
    updated = workspace.grantflow("identities", "import", clean)
    assert updated.returncode == 0, updated.stderr
    assert "1 rows: 0 created, 1 updated, 0 unchanged, 0 rejected" in updated.stdout
    assert "title: None -> 'Engineer'" in updated.stdout
    assert "(events: identity_moved)" in updated.stdout


def test_a_refused_file_is_one_error_line_and_exit_1(workspace: Workspace) -> None:
    """A header problem or a non-UTF-8 file imports nothing: exit 1, an error and a next line."""
    unknown = workspace.grantflow(
        "identities", "import", workspace.csv("bad.csv", "email,nickname\nnew@example.com,N\n")
    )
    assert unknown.returncode == 1
    assert unknown.stdout == ""
    lines = unknown.stderr.splitlines()
    assert lines[0] == (
        "error: file: the header row is not valid: unknown column 'nickname' (column 2)"
    )
    assert lines[1].startswith("  next: the columns are email, display_name")

    latin1 = workspace.grantflow(
        "identities",
        "import",
        workspace.csv("latin1.csv", "email\nzoë@example.com\n".encode("latin-1")),
    )
    assert latin1.returncode == 1
    assert "error: file: the file is not UTF-8" in latin1.stderr


def test_bad_input_is_one_error_line(workspace: Workspace) -> None:
    nobody = workspace.grantflow("identities", "show", "nobody")
    assert nobody.returncode == 1
    assert nobody.stderr.splitlines() == [
        "error: identity: no identity with id, email or userName 'nobody'"
    ]
    bad_date = workspace.grantflow(
        "identities", "create", "--email", "d@example.com", "--start-date", "tomorrow"
    )
    assert bad_date.returncode == 1
    assert bad_date.stderr.startswith("error: --start-date: ")
    bad_attr = workspace.grantflow(
        "identities", "create", "--email", "d@example.com", "--attr", "x"
    )
    assert bad_attr.stderr.splitlines() == ["error: --attr: 'x' is not NAME=VALUE"]
    first = workspace.json("identities", "create", "--email", "dup@example.com")
    duplicate = workspace.grantflow("identities", "create", "--email", "DUP@example.com")
    assert duplicate.returncode == 1
    assert duplicate.stderr.splitlines() == [
        f"error: email: an identity with email 'dup@example.com' already exists ({first['id']})"
    ]
