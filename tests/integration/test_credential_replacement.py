"""Replacing a connection's credential, on both databases: its metadata shows who replaced it
and when (the first setter stays), and the old secret's last use is not carried over."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import httpx
import pytest

from grantflow.auth.permissions import Role
from grantflow.config import Settings
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.connections import (
    allowing_loopback,
    connection_worker,
    http_workflow,
    make_application,
    make_connection,
    ok,
    put_credential,
)
from tests.support.engine import publish, start, wait_status
from tests.support.people import people
from tests.support.target import Reply, running_target


@pytest.fixture
def settings(database: Database, tmp_path: Path) -> Settings:
    return allowing_loopback(database, tmp_path)


def test_a_replaced_credential_shows_the_replacement_and_no_old_use(
    api: Api, admin: httpx.Client, database: Database, settings: Settings
) -> None:
    """Set by admin and used by a run; replaced by an editor: replaced_at/replaced_by name the
    replacement, created_by stays admin, last_used_at is empty until the new one is used."""
    with running_target() as target, people(api, editor=Role.EDITOR) as users:
        target.on("/resource", Reply(200, {"ok": True}))
        app_id = make_application(admin)
        conn = make_connection(admin, app_id, target.url, auth_kind="bearer")
        cid = conn["id"]
        put_credential(admin, cid, {"token": "tok-old-4711abcd"})
        wf = publish(database, http_workflow("uses", app_id))
        with connection_worker(settings, database):
            shown = wait_status(database, start(database, wf), "succeeded", "failed")
            assert shown["status"] == "succeeded", shown["failure"]
            used = ok(admin.get(f"/api/v1/connections/{cid}"))["credential"]
            assert used["last_used_at"] is not None
            assert (used["replaced_at"], used["replaced_by"]) == (None, None)

            replaced = ok(
                users["editor"].put(
                    f"/api/v1/connections/{cid}/credential", json={"token": "tok-new-0815wxyz"}
                )
            )["credential"]
            assert replaced["replaced_by"] == "editor@example.com"
            assert replaced["created_by"] == "admin@example.com"
            assert dt.datetime.fromisoformat(replaced["replaced_at"]) >= dt.datetime.fromisoformat(
                used["last_used_at"]
            )
            assert replaced["last_used_at"] is None
            assert replaced["refreshed_at"] is None

            shown = wait_status(database, start(database, wf), "succeeded", "failed")
            assert shown["status"] == "succeeded", shown["failure"]
        again = ok(admin.get(f"/api/v1/connections/{cid}"))["credential"]
    assert again["last_used_at"] is not None
    assert dt.datetime.fromisoformat(again["last_used_at"]) >= dt.datetime.fromisoformat(
        replaced["replaced_at"]
    )
    assert target.calls()[-1].headers["authorization"] == "Bearer tok-new-0815wxyz"
