"""A connection's health history over the API: each Test connection and each change of status
is a line, newest first, naming who or what caused it; read with connection:read."""

from __future__ import annotations

import httpx

from grantflow.auth.permissions import Role
from grantflow.config import Settings
from grantflow.connections import history
from grantflow.connections.models import HealthEvent
from tests.conftest import Api
from tests.support.admin_objects import seed
from tests.support.connections import API, ok


def test_test_connection_and_status_changes_are_listed_newest_first(
    api: Api, admin: httpx.Client, settings: Settings
) -> None:
    """Setting the credential connected the connection; a Test connection that cannot reach
    the target adds the failed check and the move to unhealthy, each naming the tester."""
    seeded = seed(api.database, settings)
    tested = ok(admin.post(f"{API}/connections/{seeded.connection_id}/test"))
    assert tested["ok"] is False
    with api.as_role(Role.VIEWER, "health-viewer@example.com") as viewer:
        lines = ok(viewer.get(f"{API}/connections/{seeded.connection_id}/health"))
    kinds = [(line["kind"], line["status"], line["actor"]) for line in lines]
    assert kinds == [
        ("check", "unhealthy", "admin@example.com"),
        ("status", "unhealthy", "admin@example.com"),
        ("status", "connected", "system:test"),
    ]
    assert lines[0]["ok"] is False
    assert lines[0]["message"] == tested["message"]
    assert lines[1]["previous_status"] == "connected"
    assert lines[2]["previous_status"] == "disconnected"


def test_the_history_keeps_the_newest_lines_only(api: Api, settings: Settings) -> None:
    """Past `history.KEEP` lines for one connection, the oldest are dropped as new ones come."""
    seeded = seed(api.database, settings)
    with api.database.transaction() as session:
        for n in range(history.KEEP + 5):
            history.record_check(
                session,
                seeded.connection_id,
                ok=True,
                status="connected",
                latency_ms=float(n),
                status_code=200,
                error_class=None,
                message=f"check {n}",
                by="test",
            )
        kept = session.query(HealthEvent).filter_by(connection_id=seeded.connection_id).count()
        newest = history.history(session, seeded.connection_id, 1)[0]
    assert kept == history.KEEP
    assert newest.message == f"check {history.KEEP + 4}"


def test_an_unknown_connection_has_no_history(admin: httpx.Client) -> None:
    """404 naming the connection, not an empty list."""
    response = admin.get(f"{API}/connections/no-such-id/health")
    assert response.status_code == 404
    assert "connection no-such-id does not exist" in response.json()["error"]["message"]
