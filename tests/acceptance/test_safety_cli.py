"""The safety commands as a user runs them (subprocesses on one SQLite database): the webhook
secret shown once, the webhook's status and deliveries, usage and spend caps, and resuming a
workflow paused for safety."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from grantflow.store.database import Database
from tests.support.databases import sqlite_copy
from tests.support.engine import publish, start
from tests.support.processes import grantflow_env, json_output, run_grantflow

pytestmark = pytest.mark.acceptance

HOOK = {
    "name": "Hook",
    "trigger": {"type": "webhook", "input_schema": {"type": "object"}},
    "steps": [{"id": "only", "type": "set", "config": {"values": {"x": 1}}}],
}


@pytest.fixture
def db(_sqlite_template: Path, tmp_path: Path) -> Database:
    """A migrated SQLite database of this test's own, keyed like the CLI's environment."""
    database = sqlite_copy(_sqlite_template, tmp_path)
    database.use_master_keys(lambda: [b"k" * 32])
    return database


def cli(db: Database, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = grantflow_env(
        database_url=db.url.render_as_string(hide_password=False),
        secret_key="a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s=",  # b"k" * 32
    )
    return run_grantflow(*args, env=env, cwd=tmp_path)


def test_the_webhook_secret_is_printed_once_and_never_again(db: Database, tmp_path: Path) -> None:
    """`webhook-secret` prints a whsec_ secret once; `webhook` and `deliveries` never show it."""
    publish(db, HOOK)
    created = json_output(cli(db, tmp_path, "workflows", "webhook-secret", "Hook", "--json"))
    assert created["secret"].startswith("whsec_")
    assert created["rotated"] is False
    status = json_output(cli(db, tmp_path, "workflows", "webhook", "Hook", "--json"))
    assert status["secret_set"] is True
    assert created["secret"] not in json.dumps(status)
    rotated = json_output(cli(db, tmp_path, "workflows", "webhook-secret", "Hook", "--json"))
    assert rotated["rotated"] is True
    assert rotated["secret"] != created["secret"]
    listed = json_output(cli(db, tmp_path, "workflows", "deliveries", "Hook", "--json"))
    assert listed == []


def test_usage_and_caps_from_the_command_line(db: Database, tmp_path: Path) -> None:
    """`usage set-cap` sets a workflow's cap, `usage --json` shows it with the day's usage, and a
    bad kind is one error line naming the field."""
    publish(db, {**HOOK, "name": "Capped", "trigger": {"type": "manual"}})
    set_cap = cli(
        db, tmp_path, "usage", "set-cap", "--workflow", "Capped", "--kind", "steps",
        "--period", "day", "--cap", "100", "--json",
    )  # fmt: skip
    assert json_output(set_cap)["cap"] == 100
    shown = json_output(cli(db, tmp_path, "usage", "--json"))
    rows = next(w for w in shown["workflows"] if w["name"] == "Capped")["usage"]
    steps_day = next(r for r in rows if (r["kind"], r["period"]) == ("steps", "day"))
    assert (steps_day["used"], steps_day["cap"]) == (0, 100)
    bad = cli(
        db, tmp_path, "usage", "set-cap", "--kind", "dollars", "--period", "day", "--cap", "1"
    )
    assert bad.returncode == 1
    assert "kind: must be one of runs, steps, external_calls" in bad.stderr


def test_resume_safety_releases_a_held_run(db: Database, tmp_path: Path) -> None:
    """A run started while its workflow is paused for safety is held; `workflows resume-safety`
    releases it (queued, no longer held)."""
    workflow_id = publish(db, {**HOOK, "name": "Paused", "trigger": {"type": "manual"}})
    with db.transaction() as session:
        from grantflow.definitions.models import Workflow

        row = session.get(Workflow, workflow_id)
        assert row is not None
        row.safety_pause = {"breaker": "runs_per_minute", "figures": {}, "tripped_at": "x"}
    run_id = start(db, workflow_id)
    resumed = json_output(cli(db, tmp_path, "workflows", "resume-safety", "Paused", "--json"))
    assert resumed["status"] == "published"
    shown = json_output(cli(db, tmp_path, "runs", "show", run_id, "--json"))
    assert (shown["status"], shown["waiting_reason"]) == ("queued", None)
