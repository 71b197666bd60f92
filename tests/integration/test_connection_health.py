"""Test connection (POST /api/v1/connections/{id}/test) and periodic health checks against a
healthy, a down (closed port) and an unauthorised (401) target: latency, error class, the status
moving between connected and unhealthy, and the last check recorded."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from grantflow.config import Settings
from grantflow.connections.access import ConnectionAccess
from grantflow.connections.crypto import keyring_for
from grantflow.connections.health import check_due
from grantflow.connections.outbound import guarded_client, policy_for
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.connections import (
    API,
    allowing_loopback,
    connection_worker,
    make_application,
    make_connection,
    ok,
    put_credential,
    serving_api,
)
from tests.support.processes import poll
from tests.support.services import free_port
from tests.support.target import Reply, Seen, running_target


@pytest.fixture
def settings(database: Database, tmp_path: Path) -> Settings:
    return allowing_loopback(database, tmp_path)


@pytest.fixture
def api(settings: Settings, database: Database) -> Iterator[Api]:
    with serving_api(settings, database) as served:
        yield served


def _test(admin: httpx.Client, connection_id: str) -> dict[str, Any]:
    result: dict[str, Any] = ok(admin.post(f"{API}/connections/{connection_id}/test"))
    return result


def test_healthy_unauthorised_and_down_targets(api: Any, admin: httpx.Client) -> None:
    """Test connection: healthy, 401 and closed-port targets give latency, class and status."""
    token = {"ok": "Bearer tok-health-1234"}

    def health(seen: Seen) -> Reply:
        if seen.headers.get("authorization") != token["ok"]:
            return Reply(401, {"error": "no"})
        return Reply(204, None)

    with running_target() as target:
        target.respond("/api/ping", health)
        app_id = make_application(admin)
        connection = make_connection(
            admin,
            app_id,
            f"{target.url}/api",
            auth_kind="bearer",
            health_check={"path": "/ping?deep=1"},
        )
        cid = connection["id"]
        assert connection["last_checked_at"] is None
        missing = _test(admin, cid)
        assert (missing["ok"], missing["error_class"]) == (False, "configuration")
        assert missing["status"] == "disconnected"
        assert target.calls() == []  # no doomed request without a credential

        put_credential(admin, cid, {"token": "tok-health-1234"})
        healthy = _test(admin, cid)
        assert healthy["ok"] is True, healthy
        assert (healthy["status"], healthy["status_code"], healthy["error_class"]) == (
            "connected",
            204,
            None,
        )
        assert healthy["latency_ms"] > 0
        assert target.calls("/api/ping")[0].path == "/api/ping?deep=1"
        shown = ok(admin.get(f"{API}/connections/{cid}"))
        first_check = dt.datetime.fromisoformat(shown["last_checked_at"])
        assert shown["last_latency_ms"] == healthy["latency_ms"]
        assert shown["last_error"] is None

        token["ok"] = "Bearer rotated-elsewhere"  # the target no longer takes our credential
        refused = _test(admin, cid)
        assert (refused["ok"], refused["status"]) == (False, "unhealthy")
        assert (refused["error_class"], refused["status_code"]) == ("permission", 401)
        assert "replace the credential" in refused["message"]
        assert "tok-health-1234" not in str(refused)
        shown = ok(admin.get(f"{API}/connections/{cid}"))
        assert shown["status"] == "unhealthy"
        assert shown["last_error"]["class"] == "permission"
        assert shown["status_reason"] == refused["message"]
        assert dt.datetime.fromisoformat(shown["last_checked_at"]) >= first_check

        token["ok"] = "Bearer tok-health-1234"
        assert _test(admin, cid)["status"] == "connected"
        assert ok(admin.get(f"{API}/connections/{cid}"))["last_error"] is None

    down = make_connection(
        admin, app_id, f"http://127.0.0.1:{free_port()}", name="down", auth_kind="none"
    )
    result = _test(admin, down["id"])
    assert (result["ok"], result["status"], result["error_class"]) == (
        False,
        "unhealthy",
        "transient",
    )
    assert result["status_code"] is None
    assert result["latency_ms"] is not None
    assert "cannot reach" in result["message"]
    shown = ok(admin.get(f"{API}/connections/{down['id']}"))
    assert (shown["status"], shown["last_error"]["class"]) == ("unhealthy", "transient")
    assert shown["last_checked_at"] is not None
    tested = ok(admin.get(f"{API}/audit", params={"action": "connection.tested"}))["items"]
    assert len(tested) == 5


def test_a_disabled_or_refused_target_is_reported_as_such(api: Any, admin: httpx.Client) -> None:
    """Test connection: disabled is not called, 5xx is transient, the guard's refusal is safety."""
    with running_target() as target:
        target.on("/", Reply(503, {"error": "maintenance"}))
        app_id = make_application(admin)
        flaky = make_connection(admin, app_id, target.url, name="flaky")
        result = _test(admin, flaky["id"])
        assert (result["error_class"], result["status_code"]) == ("transient", 503)
        ok(admin.patch(f"{API}/connections/{flaky['id']}", json={"enabled": False}))
        disabled = _test(admin, flaky["id"])
        assert (disabled["ok"], disabled["status"]) == (False, "disconnected")
        assert "disabled" in disabled["message"]
        assert len(target.calls("/")) == 1
        port = target.url.rsplit(":", 1)[1]
        elsewhere = make_connection(admin, app_id, f"http://127.0.0.2:{port}", name="elsewhere")
        guarded = _test(admin, elsewhere["id"])
    assert (guarded["ok"], guarded["error_class"]) == (False, "safety")
    assert "loopback" in guarded["message"]


def test_an_oversized_or_redirecting_health_answer_is_unhealthy(
    api: Any, admin: httpx.Client
) -> None:
    """A health answer is read up to 64 KiB, and a redirect is not followed: both are a
    finding about the connection, never a hang or a call elsewhere."""
    with running_target() as target:
        target.on("/huge", Reply(200, "x" * (70 * 1024)))
        target.on("/moved", Reply(302, "", headers={"Location": f"{target.url}/huge"}))
        app_id = make_application(admin)
        huge = make_connection(
            admin, app_id, target.url, name="huge", health_check={"path": "/huge"}
        )
        moved = make_connection(
            admin, app_id, target.url, name="moved", health_check={"path": "/moved"}
        )
        big = _test(admin, huge["id"])
        redirected = _test(admin, moved["id"])
        assert (big["ok"], big["status"]) == (False, "unhealthy")
        assert "larger than 65536 bytes" in big["message"]
        assert (redirected["ok"], redirected["status_code"]) == (False, 302)
        assert len(target.calls("/huge")) == 1  # only the direct check; the redirect stayed put


def test_check_due_tests_only_due_connections(
    api: Any, admin: httpx.Client, settings: Settings, database: Database
) -> None:
    """check_due tests enabled connections not checked recently, and skips disabled ones."""
    with running_target() as target:
        target.on("/", Reply(200, {"ok": True}))
        app_id = make_application(admin)
        first = make_connection(admin, app_id, target.url, name="first")
        second = make_connection(admin, app_id, target.url, name="second")
        off = make_connection(admin, app_id, target.url, name="off")
        ok(admin.patch(f"{API}/connections/{off['id']}", json={"enabled": False}))
        _test(admin, first["id"])
        http = guarded_client(policy_for(settings.outbound_allow))
        try:
            access = ConnectionAccess(database, keyring_for(settings), http)
            assert check_due(access, dt.timedelta(minutes=5)) == 1
            assert check_due(access, dt.timedelta(minutes=5)) == 0
            assert check_due(access, dt.timedelta(0)) == 2
        finally:
            http.close()
    assert len(target.calls("/")) == 4
    assert ok(admin.get(f"{API}/connections/{second['id']}"))["last_checked_at"] is not None
    assert ok(admin.get(f"{API}/connections/{off['id']}"))["last_checked_at"] is None


def test_workers_check_connection_health_periodically(
    api: Any, admin: httpx.Client, settings: Settings, database: Database
) -> None:
    """A worker with health checks on marks a connection whose target answers 401 unhealthy."""
    with running_target() as target:
        target.on("/", Reply(401, {"error": "no"}))
        app_id = make_application(admin)
        connection = make_connection(admin, app_id, target.url, auth_kind="bearer")
        put_credential(admin, connection["id"], {"token": "tok-periodic-99"})

        def unhealthy() -> bool:
            shown = ok(admin.get(f"{API}/connections/{connection['id']}"))
            return bool(shown["status"] == "unhealthy")

        with connection_worker(settings, database, health_check_seconds=0.1):
            poll(unhealthy, timeout=60, what="the periodic check to mark the connection")
    shown = ok(admin.get(f"{API}/connections/{connection['id']}"))
    assert shown["last_error"]["class"] == "permission"
    assert target.calls("/")[0].headers["authorization"] == "Bearer tok-periodic-99"
