"""`grantflow grants dispatch` as a user runs it: a subprocess on a SQLite file, taking the advice
a grant made while its workflow was disabled gives."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from grantflow.access import grants
from grantflow.access.applications import ApplicationCreate, create_application
from grantflow.access.automation import automation
from grantflow.access.identities import IdentityCreate, create_identity
from grantflow.auth.actor import Actor
from grantflow.definitions.workflows import set_enabled
from grantflow.queue.database import DatabaseQueue
from grantflow.store.database import Database
from tests.support.databases import sqlite_copy
from tests.support.engine import publish, running_worker, wait_status
from tests.support.processes import grantflow_env, run_grantflow

pytestmark = pytest.mark.acceptance

ACTOR = Actor.system("test")


@pytest.fixture
def database(_sqlite_template: Path, tmp_path: Path) -> Iterator[Database]:
    """A migrated SQLite file, grantflow.db in tmp_path, that the commands share."""
    db = sqlite_copy(_sqlite_template, tmp_path)
    yield db
    db.dispose()


def test_dispatch_starts_the_workflow_enabled_after_the_grant(
    database: Database, tmp_path: Path
) -> None:
    """Granted while 'Wiki grant' was disabled, then enabled: `grants dispatch`, as the grant
    advises, prints the started run, which succeeds; a second dispatch while it is in flight
    is refused naming it."""
    env = grantflow_env(
        database_url=f"sqlite:///{tmp_path / 'grantflow.db'}",
        secret_key_file=tmp_path / "secret.key",
    )

    def grantflow(*args: str) -> subprocess.CompletedProcess[str]:
        return run_grantflow(*args, env=env, cwd=tmp_path)

    with database.transaction() as session:
        app = create_application(session, ACTOR, ApplicationCreate(name="Wiki"))
        create_identity(
            session, ACTOR, DatabaseQueue(database), IdentityCreate(email="ada@example.com")
        )
        app_id = app.id
    step = {"id": "note", "type": "set", "config": {"values": {"who": "{{ identity.email }}"}}}
    wf = publish(
        database,
        {
            "name": "Wiki grant",
            "application": app_id,
            "trigger": {"type": "access_granted"},
            "steps": [step],
        },
    )
    with database.transaction() as session:
        set_enabled(session, ACTOR, wf, False)
        grant = grants.create_grant(
            session,
            ACTOR,
            DatabaseQueue(database),
            grants.GrantCreate(identity="ada@example.com", application="Wiki"),
        )
        grant_id = grant.id
        reason = automation(session, grant).no_run_reason
        assert reason is not None
        assert reason.endswith("it is disabled (enable it, then dispatch the grant)")
        set_enabled(session, ACTOR, wf, True)
    shown = grantflow("grants", "dispatch", grant_id)
    assert shown.returncode == 0, shown.stderr
    first = shown.stdout.splitlines()[0]
    assert first.startswith("started run ")
    assert first.endswith(" of workflow 'Wiki grant'")
    run_id = first.split()[2]

    refused = grantflow("grants", "dispatch", grant_id)
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"error: grant {grant_id} already has a run in flight: run {run_id} (queued)",
        f"  next: wait for it to end, or cancel it (POST /api/v1/runs/{run_id}/cancel), "
        "then dispatch the grant",
    ]
    with running_worker(database):
        wait_status(database, run_id, "succeeded")
