"""Times are written one way everywhere: RFC 3339 in UTC with `Z` (API, CLI --json, audit
summaries, run details), never `+00:00`."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import httpx

from grantflow import timestamps
from grantflow.config import Settings
from grantflow.store.database import Database
from tests.support.connections import API, make_application, ok
from tests.support.people import audit
from tests.support.processes import grantflow_env, json_output, run_grantflow

RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def test_the_serializer_writes_utc_with_z() -> None:
    """Aware times in any zone, naive (stored) times and dates each have one written form."""
    paris = dt.timezone(dt.timedelta(hours=2))
    assert timestamps.rfc3339(dt.datetime(2026, 3, 2, 12, 0, 30, tzinfo=paris)) == (
        "2026-03-02T10:00:30Z"
    )
    assert timestamps.rfc3339(dt.datetime(2026, 3, 2, 10, 0, 30, 5)) == (
        "2026-03-02T10:00:30.000005Z"
    )
    assert timestamps.plain(dt.date(2026, 3, 2)) == "2026-03-02"
    assert timestamps.json_default(Path("x")) == "x"


def test_api_cli_and_audit_write_the_same_z_form(
    admin: httpx.Client, database: Database, settings: Settings, tmp_path: Path
) -> None:
    """A grant's expiry reads the same in its API answer, the audit summary of its creation and
    the CLI's --json; an identity's created_at is RFC 3339 with Z in the API and the CLI."""
    make_application(admin, "Wiki")
    ada = ok(admin.post(f"{API}/identities", json={"email": "ada@example.com"}), 201)
    expiry = dt.datetime(2031, 1, 2, 5, 4, 3, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    grant = ok(
        admin.post(
            f"{API}/grants",
            json={
                "identity": ada["id"],
                "application": "Wiki",
                "expires_at": expiry.isoformat(),
            },
        ),
        201,
    )
    assert grant["expires_at"] == "2031-01-02T10:04:03Z"
    assert RFC3339_Z.match(ada["created_at"])
    [created] = audit(admin, "grant.created", grant["id"])
    assert created["summary"]["expires_at"] == "2031-01-02T10:04:03Z"
    assert RFC3339_Z.match(created["at"])

    env = grantflow_env(
        database_url=database.url.render_as_string(hide_password=False),
        secret_key=settings.secret_key.get_secret_value(),
    )
    shown = json_output(
        run_grantflow("identities", "show", "ada@example.com", "--json", env=env, cwd=tmp_path)
    )
    assert shown["created_at"] == ada["created_at"]
    grants = json_output(run_grantflow("grants", "list", "--json", env=env, cwd=tmp_path))
    rows = grants["items"] if isinstance(grants, dict) else grants
    assert [g["expires_at"] for g in rows] == ["2031-01-02T10:04:03Z"]
