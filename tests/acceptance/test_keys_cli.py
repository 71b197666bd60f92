"""`grantflow keys rotate` and `grantflow connections ...` as a user runs them (subprocesses),
next to a running app and worker that must keep working through a master-key rotation."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from grantflow.config import Settings
from grantflow.connections.crypto import Keyring, key_id
from grantflow.connections.models import Credential
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.connections import (
    API,
    allowing_loopback,
    connection_worker,
    http_workflow,
    make_application,
    make_connection,
    ok,
    put_credential,
    serving_api,
)
from tests.support.engine import publish, start, wait_status
from tests.support.processes import grantflow_env, json_output, run_grantflow
from tests.support.target import Reply, Seen, running_target

pytestmark = pytest.mark.acceptance


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return tmp_path / "secret.key"


@pytest.fixture
def settings(database: Database, tmp_path: Path, key_file: Path) -> Settings:
    """Master keys in a key file (rotation rewrites it), shared by app, worker and CLI."""
    return allowing_loopback(database, tmp_path, secret_key=None, secret_key_file=key_file)


@pytest.fixture
def api(settings: Settings, database: Database) -> Iterator[Api]:
    with serving_api(settings, database) as served:
        yield served


def _cli(settings: Settings, cwd: Path, *args: str, **env: str) -> Any:
    environment = grantflow_env(
        database_url=settings.database_url, secret_key_file=settings.secret_key_file, **env
    )
    return run_grantflow(*args, env=environment, cwd=cwd)


def _stored(database: Database) -> dict[str, tuple[str, str]]:
    with database.engine.connect() as conn:
        rows = conn.execute(select(Credential.id, Credential.key_id, Credential.ciphertext))
        return {row.id: (row.key_id, row.ciphertext) for row in rows}


def _key_lines(path: Path) -> list[str]:
    return path.read_text().split()


def test_rotate_reencrypts_everything_and_the_running_app_keeps_working(
    api: Any,
    admin: httpx.Client,
    settings: Settings,
    database: Database,
    tmp_path: Path,
    key_file: Path,
) -> None:
    """keys rotate re-encrypts every credential; the running app and worker keep working."""

    def authorised(seen: Seen) -> Reply:
        if seen.headers.get("authorization") == "Bearer tok-rotate-7731":
            return Reply(200, {"ok": True})
        return Reply(401, {"error": "no"})

    with running_target() as target:
        target.respond("/users", authorised)
        app_id = make_application(admin)
        bearer = make_connection(
            admin, app_id, target.url, auth_kind="bearer", health_check={"path": "/users"}
        )
        put_credential(admin, bearer["id"], {"token": "tok-rotate-7731"})
        basic = make_connection(admin, app_id, target.url, name="other", auth_kind="basic")
        put_credential(admin, basic["id"], {"username": "u", "password": "pw-rotate-1"})
        wf = publish(database, http_workflow("rotate", app_id, path="/users"))
        old_key = key_id(base64.urlsafe_b64decode(_key_lines(key_file)[0]))
        before = _stored(database)
        assert {kid for kid, _ in before.values()} == {old_key}

        with connection_worker(settings, database):
            first = wait_status(database, start(database, wf), "succeeded", "failed")
            assert first["status"] == "succeeded", first["failure"]

            rotated = json_output(_cli(settings, tmp_path, "keys", "rotate", "--json"))
            assert rotated["reencrypted"] == 2
            assert rotated["retired"] == []
            new_key = rotated["new_key_id"]
            assert new_key != old_key
            assert len(_key_lines(key_file)) == 2  # the old key stays readable
            after = _stored(database)
            assert after.keys() == before.keys()
            assert {kid for kid, _ in after.values()} == {new_key}
            assert all(after[c][1] != before[c][1] for c in after)

            second = wait_status(database, start(database, wf), "succeeded", "failed")
            assert second["status"] == "succeeded", second["failure"]
            assert ok(admin.post(f"{API}/connections/{bearer['id']}/test"))["ok"] is True

            retired = json_output(
                _cli(settings, tmp_path, "keys", "rotate", "--retire-old", "--json")
            )
            assert set(retired["retired"]) == {old_key, new_key}
            assert len(_key_lines(key_file)) == 1
            third = wait_status(database, start(database, wf), "succeeded", "failed")
            assert third["status"] == "succeeded", third["failure"]

            # the same app sets a credential: it is sealed under the newest key
            put_credential(admin, basic["id"], {"username": "u", "password": "pw-rotate-2"})
    newest = retired["new_key_id"]
    stored = _stored(database)
    assert {kid for kid, _ in stored.values()} == {newest}
    only_newest = Keyring(lambda: [base64.urlsafe_b64decode(line) for line in _key_lines(key_file)])
    secrets = {cid: only_newest.decrypt(kid, blob, cid) for cid, (kid, blob) in stored.items()}
    assert sorted(s.get("token") or s.get("password") for s in secrets.values()) == [
        "pw-rotate-2",
        "tok-rotate-7731",
    ]
    assert [c.headers["authorization"] for c in target.calls("/users")] == [
        "Bearer tok-rotate-7731"
    ] * 4  # three runs and one Test connection
    entries = ok(admin.get(f"{API}/audit", params={"action": "keys.rotated"}))["items"]
    assert len(entries) == 2
    assert {e["summary"]["reencrypted"] for e in entries} == {2}
    assert "tok-rotate" not in json.dumps(entries)


def test_rotation_is_refused_when_the_key_comes_from_the_environment(tmp_path: Path) -> None:
    """With GRANTFLOW_SECRET_KEY set the command changes nothing and says what to do instead."""
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    env = grantflow_env(database_url=f"sqlite:///{tmp_path / 'gf.db'}", secret_key=key)
    result = run_grantflow("keys", "rotate", env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "GRANTFLOW_SECRET_KEY" in result.stderr
    assert "GRANTFLOW_SECRET_KEY_FILE" in result.stderr  # the way out
    assert "Traceback" not in result.stderr
    assert key not in result.stdout + result.stderr
    assert not (tmp_path / "gf.db").exists() or (tmp_path / "gf.db").stat().st_size == 0


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_connections_cli_sets_a_credential_and_tests_the_connection(
    api: Any, admin: httpx.Client, settings: Settings, tmp_path: Path
) -> None:
    """CLI: set-credential never echoes; connections test exits 0 healthy, 1 on a 401."""
    accepted = {"token": "tok-cli-4455"}

    def check(seen: Seen) -> Reply:
        if seen.headers.get("authorization") == f"Bearer {accepted['token']}":
            return Reply(200, {"ok": True})
        return Reply(401, {"error": "no"})

    with running_target() as target:
        target.respond("/", check)
        app_id = make_application(admin, "Acme")
        connection = make_connection(admin, app_id, target.url, auth_kind="bearer")
        secret_file = tmp_path / "credential.json"
        secret_file.write_text(json.dumps({"token": "tok-cli-4455"}))
        stored = _cli(
            settings,
            tmp_path,
            "connections",
            "set-credential",
            "Acme",
            "crm",
            "--from-file",
            str(secret_file),
        )
        assert stored.returncode == 0, stored.stderr
        assert "never shown again" in stored.stdout
        assert "tok-cli-4455" not in stored.stdout + stored.stderr
        shown = ok(admin.get(f"{API}/connections/{connection['id']}"))
        assert (shown["status"], shown["credential"]["created_by"]) == ("connected", "system:cli")

        healthy = json_output(
            _cli(settings, tmp_path, "connections", "test", "Acme", "crm", "--json")
        )
        assert (healthy["ok"], healthy["status"], healthy["status_code"]) == (
            True,
            "connected",
            200,
        )
        assert healthy["latency_ms"] > 0

        accepted["token"] = "rotated-elsewhere"
        refused = _cli(settings, tmp_path, "connections", "test", "Acme", "crm")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "FAILED" in refused.stdout
    assert "HTTP 401" in refused.stdout
    assert "unhealthy" in refused.stdout
    shown = ok(admin.get(f"{API}/connections/{connection['id']}"))
    assert (shown["status"], shown["last_error"]["class"]) == ("unhealthy", "permission")
