"""OAuth 2.0 connections against a real authorization server (Authlib) and a resource server that
accepts only currently valid access tokens, both on 127.0.0.1: token caching, refresh before
expiry and once on a 401, refresh-token rotation saved before use, one refresh for many parallel
runs, invalid_grant -> reauth_required -> replace the credential -> the waiting runs resume, and a
transient token-endpoint failure that is retried and raises nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from grantflow.config import Settings
from grantflow.connections.crypto import keyring_for
from grantflow.connections.models import Credential
from grantflow.store.base import utcnow
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.connections import (
    API,
    FAST_RETRY,
    allowing_loopback,
    connection_worker,
    http_workflow,
    make_application,
    make_connection,
    ok,
    put_credential,
    serving_api,
)
from tests.support.engine import publish, start, wait_for, wait_status
from tests.support.oauth import OAuthServer, running_oauth_server


@pytest.fixture
def settings(database: Database, tmp_path: Path) -> Settings:
    return allowing_loopback(database, tmp_path)


@pytest.fixture
def api(settings: Settings, database: Database) -> Iterator[Api]:
    with serving_api(settings, database) as served:
        yield served


def _oauth_connection(
    admin: httpx.Client, app_id: str, server: OAuthServer, kind: str, secret: dict[str, Any]
) -> str:
    connection = make_connection(
        admin,
        app_id,
        f"{server.url}/api",
        auth_kind=f"oauth_{kind}",
        auth_settings={"token_url": server.token_url},
    )
    put_credential(admin, connection["id"], secret)
    return str(connection["id"])


def _client_credentials(admin: httpx.Client, app_id: str, server: OAuthServer) -> str:
    client = server.register_client()
    secret = {"client_id": client.client_id, "client_secret": client.client_secret}
    return _oauth_connection(admin, app_id, server, "client_credentials", secret)


def _refresh_secret(server: OAuthServer) -> dict[str, str]:
    client = server.clients.get("grantflow") or server.register_client()
    return {
        "client_id": client.client_id,
        "client_secret": client.client_secret,
        "refresh_token": server.issue_refresh_token(client.client_id),
    }


def _stored_secret(database: Database, settings: Settings, connection_id: str) -> dict[str, Any]:
    """The credential as stored right now, decrypted with the master key (a read, no lock)."""
    with database.engine.connect() as conn:
        row = conn.execute(
            select(Credential.key_id, Credential.ciphertext, Credential.id).where(
                Credential.connection_id == connection_id
            )
        ).one()
    return keyring_for(settings).decrypt(row.key_id, row.ciphertext, row.id)


def _expire_soon(database: Database, connection_id: str, seconds: float = 30) -> None:
    """Move the cached token's expiry into the early-refresh window (it is still valid)."""
    with database.transaction() as session:
        session.execute(
            update(Credential)
            .where(Credential.connection_id == connection_id)
            .values(
                token_expires_at=utcnow() + dt.timedelta(seconds=seconds),
                # as if credential and token were an hour old: an hour-long token
                refreshed_at=utcnow() - dt.timedelta(hours=1),
                created_at=utcnow() - dt.timedelta(hours=2),
                replaced_at=None,
            )
        )


def _settled(shown: dict[str, Any]) -> bool:
    """Ended, or waiting on a person (not on a retry timer)."""
    if shown["status"] == "waiting":
        return bool(shown["waiting_reason"] == "reauth")
    return shown["status"] in ("succeeded", "failed", "cancelled", "timed_out")


def _succeeds(database: Database, run_id: str) -> dict[str, Any]:
    shown = wait_for(database, run_id, _settled)
    assert shown["status"] == "succeeded", shown["failure"]
    return shown


def test_client_credentials_token_is_cached_then_refreshed_before_expiry(
    api: Any, admin: httpx.Client, settings: Settings, database: Database
) -> None:
    """Six calls share one token; a token inside the early window is replaced while still valid."""
    with running_oauth_server(expires_in=3600) as server:
        app_id = make_application(admin)
        cid = _client_credentials(admin, app_id, server)
        wf = publish(database, http_workflow("cc", app_id, steps=3))
        with connection_worker(settings, database):
            _succeeds(database, start(database, wf))
            _succeeds(database, start(database, wf))
            assert len(server.grants()) == 1
            first_token = server.issued[0]["access_token"]
            _expire_soon(database, cid)
            _succeeds(database, start(database, wf))
    grants = server.grants(None)
    assert [g["form"]["grant_type"] for g in grants] == ["client_credentials"] * 2
    assert all(g["status"] == 200 for g in grants)
    assert server.access[first_token].valid()  # the old token had not expired yet
    assert len(server.resource_requests) == 9
    assert all(status == 200 for _, status in server.resource_requests)
    credential = ok(admin.get(f"{API}/connections/{cid}"))["credential"]
    assert credential["refreshed_at"] is not None
    expires = dt.datetime.fromisoformat(credential["token_expires_at"])
    assert expires > utcnow() + dt.timedelta(minutes=50)


def test_a_short_lived_token_is_still_reused(
    api: Any, admin: httpx.Client, settings: Settings, database: Database
) -> None:
    """A token that lives 20 s (less than the usual early-refresh lead) serves a quick run."""
    with running_oauth_server(expires_in=20) as server:
        app_id = make_application(admin)
        _client_credentials(admin, app_id, server)
        wf = publish(database, http_workflow("short", app_id, steps=3))
        with connection_worker(settings, database):
            _succeeds(database, start(database, wf))
    assert len(server.grants(None)) == 1
    assert [s for _, s in server.resource_requests] == [200, 200, 200]


def test_rotated_refresh_token_is_saved_before_the_new_access_token_is_used(
    api: Any, admin: httpx.Client, settings: Settings, database: Database
) -> None:
    """Each rotated refresh token is stored before its access token is used, and used next."""
    seen_stored: dict[str, str] = {}
    with running_oauth_server(expires_in=600, rotate=True) as server:
        app_id = make_application(admin)
        secret = _refresh_secret(server)
        cid = _oauth_connection(admin, app_id, server, "refresh_token", secret)

        def record(token: str) -> None:
            seen_stored[token] = _stored_secret(database, settings, cid)["refresh_token"]

        server.on_valid_token = record
        wf = publish(database, http_workflow("rt", app_id))
        with connection_worker(settings, database):
            _succeeds(database, start(database, wf))
            _expire_soon(database, cid)
            _succeeds(database, start(database, wf))
    grants = server.grants(None)
    assert [g["status"] for g in grants] == [200, 200]
    assert grants[0]["form"]["refresh_token"] == secret["refresh_token"]
    first, second = (g["body"] for g in grants)
    assert first["refresh_token"] != secret["refresh_token"]
    assert grants[1]["form"]["refresh_token"] == first["refresh_token"]  # the rotated one
    assert seen_stored[first["access_token"]] == first["refresh_token"]
    assert seen_stored[second["access_token"]] == second["refresh_token"]
    assert server.refresh[secret["refresh_token"]].revoked  # the server really rotated
    stored = _stored_secret(database, settings, cid)
    assert stored["refresh_token"] == second["refresh_token"]
    assert stored["access_token"] == second["access_token"]
    assert stored["client_secret"] == secret["client_secret"]


def test_a_refused_token_is_refreshed_once(
    api: Any, admin: httpx.Client, settings: Settings, database: Database
) -> None:
    """A 401 costs one refresh: a revoked token recovers, a refusing target fails permanent."""
    with running_oauth_server(expires_in=3600) as server:
        app_id = make_application(admin)
        _client_credentials(admin, app_id, server)
        wf = publish(database, http_workflow("revoked", app_id))
        with connection_worker(settings, database):
            _succeeds(database, start(database, wf))
            server.revoke_access()
            shown = _succeeds(database, start(database, wf))
            assert shown["steps"][0]["attempts"] == 1
            assert len(server.grants()) == 2
            assert [s for _, s in server.resource_requests] == [200, 401, 200]

            server.accept_tokens = False
            failed = wait_status(database, start(database, wf), "failed", "succeeded")
    assert failed["status"] == "failed"
    assert failed["failure"]["class"] == "permanent"
    assert "401" in failed["failure"]["message"]
    assert "credential" in failed["failure"]["next_action"]
    assert len(server.grants()) == 3  # one more refresh, not a loop
    assert [s for _, s in server.resource_requests][3:] == [401, 401]


def test_parallel_runs_refresh_once(
    api: Any, admin: httpx.Client, settings: Settings, database: Database
) -> None:
    """Eight runs needing a token at once on eight worker slots cause exactly one refresh."""
    with running_oauth_server(expires_in=30, rotate=True, token_delay=0.3) as server:
        app_id = make_application(admin)
        _oauth_connection(admin, app_id, server, "refresh_token", _refresh_secret(server))
        wf = publish(database, http_workflow("parallel", app_id))
        runs = [start(database, wf) for _ in range(8)]
        with connection_worker(settings, database, concurrency=8):
            for run_id in runs:
                _succeeds(database, run_id)
    assert len(server.grants(None)) == 1
    token = server.issued[0]["access_token"]
    assert [t for t, _ in server.resource_requests] == [token] * 8
    assert all(status == 200 for _, status in server.resource_requests)


def test_invalid_grant_waits_for_reauthorisation_and_replacing_the_credential_resumes_runs(
    api: Any, admin: httpx.Client, settings: Settings, database: Database
) -> None:
    """invalid_grant: reauth_required, one notice, runs wait; a new credential resumes them."""
    with running_oauth_server(expires_in=600, rotate=True) as server:
        app_id = make_application(admin)
        cid = _oauth_connection(admin, app_id, server, "refresh_token", _refresh_secret(server))
        server.revoke_refresh()
        wf = publish(database, http_workflow("reauth", app_id, retry=FAST_RETRY))
        runs = [start(database, wf) for _ in range(3)]
        with connection_worker(settings, database, concurrency=3):
            for run_id in runs:
                wait_for(database, run_id, _settled)
                shown = ok(admin.get(f"{API}/runs/{run_id}"))
                assert (shown["status"], shown["waiting_reason"]) == ("waiting", "reauth")
                assert shown["failure"]["connection_id"] == cid
                assert "crm" in shown["failure"]["message"]
                assert "replace" in shown["failure"]["next_action"]
                assert shown["steps"][0]["status"] == "waiting"
            connection = ok(admin.get(f"{API}/connections/{cid}"))
            assert connection["status"] == "reauth_required"
            assert "invalid_grant" in connection["status_reason"]
            refused = len(server.grants(None))
            assert refused >= 1
            assert all(g["status"] == 400 for g in server.grants(None))
            assert all(g["body"]["error"] == "invalid_grant" for g in server.grants(None))

            # a run started now waits at once, sending nothing
            late = start(database, wf)
            wait_for(database, late, lambda d: d["status"] == "waiting")
            assert len(server.grants(None)) == refused
            assert server.resource_requests == []

            # a Test connection that fails for another reason (the token endpoint is down)
            # leaves the connection waiting for a person
            server.fail_token.append(503)
            tested = ok(admin.post(f"{API}/connections/{cid}/test"))
            assert (tested["ok"], tested["error_class"]) == (False, "transient")
            assert tested["status"] == "reauth_required"
            assert ok(admin.get(f"{API}/connections/{cid}"))["status"] == "reauth_required"

            notes = ok(admin.get(f"{API}/notifications", params={"kind": "reauth_required"}))
            assert len(notes["items"]) == 1
            note = notes["items"][0]
            assert (note["target_type"], note["target_id"]) == ("connection", cid)
            assert note["resolved_at"] is None

            put_credential(admin, cid, _refresh_secret(server))
            for run_id in [*runs, late]:
                shown = _succeeds(database, run_id)
                assert shown["steps"][0]["output"] == {"ok": True, "client": "grantflow"}
    connection = ok(admin.get(f"{API}/connections/{cid}"))
    assert (connection["status"], connection["status_reason"]) == ("connected", None)
    notes = ok(admin.get(f"{API}/notifications", params={"kind": "reauth_required"}))["items"]
    assert len(notes) == 1
    assert notes[0]["resolved_at"] is not None
    assert len(server.grants(200)) == 1  # the new credential refreshed once for all four runs


def test_one_transient_token_endpoint_failure_is_retried_and_raises_nothing(
    api: Any, admin: httpx.Client, settings: Settings, database: Database
) -> None:
    """One 503 from the token endpoint is retried; the connection and notifications stay quiet."""
    with running_oauth_server(expires_in=3600) as server:
        app_id = make_application(admin)
        cid = _client_credentials(admin, app_id, server)
        server.fail_token.append(503)
        wf = publish(database, http_workflow("blip", app_id, retry=FAST_RETRY))
        with connection_worker(settings, database):
            shown = _succeeds(database, start(database, wf))
    assert shown["steps"][0]["attempts"] == 2
    assert [g["status"] for g in server.grants(None)] == [503, 200]
    assert ok(admin.get(f"{API}/connections/{cid}"))["status"] == "connected"
    assert ok(admin.get(f"{API}/notifications"))["items"] == []
    events = ok(admin.get(f"{API}/runs/{shown['id']}/timeline"))
    retrying = [e for e in _items(events) if e["kind"] == "step_retrying"]
    assert len(retrying) == 1
    assert retrying[0]["data"]["class"] == "transient"


def test_a_health_check_of_an_oauth_connection_uses_a_token(
    api: Any, admin: httpx.Client, settings: Settings, database: Database
) -> None:
    """Test connection on an OAuth connection fetches a token and calls the health path."""
    with running_oauth_server(expires_in=3600) as server:
        app_id = make_application(admin)
        cid = _client_credentials(admin, app_id, server)
        result = ok(admin.post(f"{API}/connections/{cid}/test"))
        assert result["ok"] is True, result
        server.accept_tokens = False
        refused = ok(admin.post(f"{API}/connections/{cid}/test"))
    assert (refused["ok"], refused["error_class"]) == (False, "permission")
    assert len(server.grants(200)) == 2  # the 401 got one refresh


def _items(payload: Any) -> list[dict[str, Any]]:
    return list(payload["events"])
