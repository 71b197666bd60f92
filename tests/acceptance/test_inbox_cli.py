"""`grantflow inbox` as a user runs it: subprocesses on a SQLite database, with a
`grantflow worker` process advancing the runs. People act `--as` themselves."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from grantflow.auth.permissions import Role
from grantflow.auth.users import create_user
from grantflow.config import load_settings, master_keys
from grantflow.engine import detail, operations
from grantflow.queue.database import DatabaseQueue
from grantflow.store import migrate
from grantflow.store.database import Database, open_database
from tests.support.engine import ACTOR, publish, start
from tests.support.processes import (
    grantflow_env,
    json_output,
    poll,
    run_grantflow,
    start_worker,
)

pytestmark = pytest.mark.acceptance

APPROVAL = {
    "name": "Wiki access",
    "trigger": {"type": "manual"},
    "steps": [
        {
            "id": "approve",
            "type": "approval",
            "config": {
                "title": "Give ada the wiki?",
                "approvers": {"users": ["alice@example.com"]},
                "require_justification": True,
            },
            "next": "done",
        },
        {"id": "done", "type": "set", "config": {"values": {"ok": True}}},
    ],
}
FORM_TASK = {
    "name": "Licence",
    "trigger": {"type": "manual"},
    "steps": [
        {
            "id": "enter",
            "type": "task",
            "config": {
                "title": "Enter the ticket",
                "assignees": {"roles": ["approver"]},
                "form": {
                    "type": "object",
                    "required": ["ticket"],
                    "properties": {"ticket": {"type": "string"}},
                },
            },
            "next": "record",
        },
        {
            "id": "record",
            "type": "set",
            "config": {"values": {"t": "{{ steps.enter.output.ticket }}"}},
        },
    ],
}


@dataclass
class Workspace:
    workdir: Path
    db: Database
    env: dict[str, str]

    def grantflow(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_grantflow(*args, env=self.env, cwd=self.workdir)

    def run(self, run_id: str) -> dict[str, Any]:
        with self.db.transaction() as session:
            return detail.run_detail(
                session, operations.get_run(session, run_id), DatabaseQueue(self.db)
            )

    def wait(self, run_id: str, *statuses: str) -> dict[str, Any]:
        shown: dict[str, Any] = poll(
            lambda: (r := self.run(run_id))["status"] in statuses and r,
            timeout=120,
            what=f"run {run_id} to be {statuses}",
        )
        return shown


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """A migrated SQLite file with alice and bob (approvers), vic (viewer), two published
    workflows, and a `grantflow worker` process polling it."""
    workdir = tmp_path_factory.mktemp("inbox-cli")
    db_file = workdir / "grantflow.db"
    db = open_database(make_url(f"sqlite:///{db_file}"))
    key_file = workdir / "secret.key"
    db.use_master_keys(lambda: master_keys(load_settings(secret_key_file=key_file)))
    migrate.upgrade(db)
    with db.transaction() as session:
        for name, role in (("alice", Role.APPROVER), ("bob", Role.APPROVER), ("vic", Role.VIEWER)):
            create_user(session, ACTOR, email=f"{name}@example.com", roles=[role])
    env = grantflow_env(database_url=f"sqlite:///{db_file}", secret_key_file=workdir / "secret.key")
    worker = start_worker(env, workdir, "--poll-seconds", "0.2")
    try:
        yield Workspace(workdir, db, env)
    finally:
        worker.stop()
        db.dispose()


def waiting_task_id(workspace: Workspace, run_id: str) -> str:
    shown = workspace.wait(run_id, "waiting")
    task_id: str = shown["waiting_for"]["task_id"]
    return task_id


def test_an_approver_approves_a_waiting_run_from_the_command_line(workspace: Workspace) -> None:
    run_id = start(workspace.db, publish(workspace.db, APPROVAL))
    task_id = waiting_task_id(workspace, run_id)

    [listed] = json_output(
        workspace.grantflow("inbox", "list", "--as", "alice@example.com", "--json")
    )
    assert (listed["id"], listed["kind"], listed["title"]) == (
        task_id,
        "approval",
        "Give ada the wiki?",
    )
    assert listed["you_can_act"] is True

    shown = workspace.grantflow("inbox", "show", task_id)
    assert shown.returncode == 0, shown.stderr
    assert f"approval {task_id}  pending  'Give ada the wiki?'" in shown.stdout
    assert "assigned to: alice@example.com" in shown.stdout
    assert "approving needs a justification (--comment)" in shown.stdout

    stranger = workspace.grantflow("inbox", "approve", task_id, "--as", "bob@example.com")
    assert stranger.returncode == 1
    assert stranger.stdout == ""
    assert stranger.stderr.splitlines() == [
        f"error: bob@example.com is not an assignee of task {task_id} "
        "(assigned to: alice@example.com)",
        "  next: ask an assignee to act, or an admin to reassign the task to you",
    ]
    unjustified = workspace.grantflow("inbox", "approve", task_id, "--as", "alice@example.com")
    assert unjustified.returncode == 1
    assert "error: comment: this approval requires a justification" in unjustified.stderr

    approved = json_output(
        workspace.grantflow(
            "inbox", "approve", task_id, "--as", "alice@example.com", "-m", "wiki editor", "--json"
        )
    )
    assert approved["status"] == "approved"
    assert [(d["by"], d["via"], d["comment"]) for d in approved["decisions"]] == [
        ("alice@example.com", "cli", "wiki editor")
    ]
    done = workspace.wait(run_id, "succeeded", "failed")
    assert done["status"] == "succeeded", done["failure"]
    audit = json_output(workspace.grantflow("audit", "list", "--action", "task.approve", "--json"))
    assert [(e["actor"], e["target_id"]) for e in audit] == [("alice@example.com", task_id)]


def test_a_task_is_submitted_with_data_checked_against_its_form(
    workspace: Workspace, tmp_path: Path
) -> None:
    run_id = start(workspace.db, publish(workspace.db, FORM_TASK))
    task_id = waiting_task_id(workspace, run_id)

    bad = workspace.grantflow(
        "inbox", "submit", task_id, "--as", "bob@example.com", "--data", '{"ticket": 5}'
    )
    assert bad.returncode == 1
    assert "error: data does not match the task's form: data.ticket: 5 is not of type 'string'" in (
        bad.stderr
    )
    data_file = tmp_path / "form.yaml"
    data_file.write_text("ticket: INC-7\n")
    submitted = json_output(
        workspace.grantflow(
            "inbox",
            "submit",
            task_id,
            "--as",
            "bob@example.com",
            "--data-file",
            str(data_file),
            "--json",
        )
    )
    assert (submitted["status"], submitted["output"]) == ("submitted", {"ticket": "INC-7"})
    done = workspace.wait(run_id, "succeeded", "failed")
    assert done["status"] == "succeeded", done["failure"]
    record = next(s for s in done["steps"] if s["step_id"] == "record")
    assert record["output"] == {"t": "INC-7"}


def test_acting_needs_an_active_user_with_workflow_task(workspace: Workspace) -> None:
    """--as must name a user; a viewer's inbox is empty, as the API answers it."""
    viewer = workspace.grantflow("inbox", "list", "--as", "vic@example.com", "--json")
    assert json.loads(viewer.stdout) == []  # as the API answers a viewer: nothing to act on
    nobody = workspace.grantflow("inbox", "list", "--as", "nobody@example.com")
    assert nobody.returncode == 1
    assert nobody.stderr.splitlines()[0] == "error: no user with email nobody@example.com"
    assert (
        json.loads(
            workspace.grantflow("inbox", "list", "--as", "alice@example.com", "--json").stdout
        )
        == []
    )
