"""`grantflow connections test` as a user runs it against a loopback target: the refusal names
GRANTFLOW_OUTBOUND_ALLOW, and running it again with the variable set connects."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from grantflow.access.applications import ApplicationCreate, create_application
from grantflow.auth.actor import Actor
from grantflow.connections.schemas import ConnectionCreate
from grantflow.connections.service import create_connection
from grantflow.store.database import Database
from tests.support.databases import sqlite_copy
from tests.support.processes import grantflow_env, run_grantflow
from tests.support.target import Reply, running_target

pytestmark = pytest.mark.acceptance

ACTOR = Actor.system("test")


@pytest.fixture
def database(_sqlite_template: Path, tmp_path: Path) -> Iterator[Database]:
    """A migrated SQLite file, grantflow.db in tmp_path, that the commands share."""
    db = sqlite_copy(_sqlite_template, tmp_path)
    yield db
    db.dispose()


def test_the_refusal_names_the_allowlist_and_setting_it_connects(
    database: Database, tmp_path: Path
) -> None:
    """Exit 1 with a `next:` line naming GRANTFLOW_OUTBOUND_ALLOW; the same command with
    GRANTFLOW_OUTBOUND_ALLOW=127.0.0.1 says ok and connected."""
    with running_target() as target:
        target.on("/", Reply(200, {"ok": True}))
        with database.transaction() as session:
            app = create_application(session, ACTOR, ApplicationCreate(name="CRM"))
            create_connection(
                session,
                ACTOR,
                app.id,
                ConnectionCreate.model_validate({"name": "crm", "base_url": target.url}),
            )

        def test(allow: str) -> tuple[int, list[str]]:
            env = grantflow_env(
                database_url=f"sqlite:///{tmp_path / 'grantflow.db'}",
                secret_key_file=tmp_path / "secret.key",
                outbound_allow=allow,
            )
            done = run_grantflow("connections", "test", "CRM", "crm", env=env, cwd=tmp_path)
            assert "Traceback" not in done.stderr
            return done.returncode, done.stdout.splitlines()

        code, lines = test("")
        assert code == 1
        assert lines[0].startswith("FAILED: outbound call to 127.0.0.1 refused")
        assert lines[1] == (
            "  next: if 127.0.0.1 is meant to be reached, add it (or its range) to "
            "GRANTFLOW_OUTBOUND_ALLOW in the environment of the process that tests it (restart "
            "it), then test again"
        )
        assert target.calls("/") == []

        code, lines = test("127.0.0.1")
        assert code == 0
        assert lines[0].startswith("ok: healthy: HTTP 200")
        assert lines[0].endswith("(status connected)")
