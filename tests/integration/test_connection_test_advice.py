"""Test connection against a loopback address the outbound guard refuses: the answer names
GRANTFLOW_OUTBOUND_ALLOW, and setting it, as advised, then testing again connects."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from grantflow.auth.permissions import Role
from grantflow.config import load_settings
from grantflow.store.database import Database
from tests.support.connections import API, make_application, make_connection, ok, serving_api
from tests.support.target import Reply, running_target


def test_a_refused_loopback_address_advises_the_allowlist_and_taking_it_connects(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the allowlist: not connected, class safety, next_action names
    GRANTFLOW_OUTBOUND_ALLOW with the host; with the variable set (the server restarted, as
    advised), the same test says connected."""
    monkeypatch.delenv("GRANTFLOW_OUTBOUND_ALLOW", raising=False)
    fixed = {
        "database_url": database.url.render_as_string(hide_password=False),
        "secret_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "secret_key_file": tmp_path / "unused.key",
    }
    with running_target() as target:
        target.on("/", Reply(200, {"ok": True}))
        with (
            serving_api(load_settings(**fixed), database) as api,
            api.as_role(Role.ADMIN, "admin@example.com") as admin,
        ):
            app_id = make_application(admin, "CRM")
            connection = make_connection(admin, app_id, target.url)
            refused = ok(admin.post(f"{API}/connections/{connection['id']}/test"))
        assert (refused["ok"], refused["status"], refused["error_class"]) == (
            False,
            "unhealthy",
            "safety",
        )
        assert refused["next_action"] == (
            "if 127.0.0.1 is meant to be reached, add it (or its range) to "
            "GRANTFLOW_OUTBOUND_ALLOW in the environment of the process that tests it (restart "
            "it), then test again"
        )
        assert target.calls("/") == []

        monkeypatch.setenv("GRANTFLOW_OUTBOUND_ALLOW", "127.0.0.1")
        with (
            serving_api(load_settings(**fixed), database) as api,
            api.client(api.user_token("ops@example.com", Role.ADMIN)) as admin,
        ):
            tested = ok(admin.post(f"{API}/connections/{connection['id']}/test"))
        assert (tested["ok"], tested["status"], tested["next_action"]) == (True, "connected", None)
        assert len(target.calls("/")) == 1
