"""A connection's credential only goes where the connection allows: a redirect to a host
outside its base URL and `allowed_hosts` fails the step as safety and sends nothing there."""

from __future__ import annotations

import httpx

from grantflow.config import Settings
from grantflow.connections.outbound import OutboundPolicy
from grantflow.store.database import Database
from tests.support.connections import (
    API,
    connection_worker,
    http_workflow,
    make_application,
    make_connection,
    ok,
    put_credential,
)
from tests.support.engine import publish, start, wait_status
from tests.support.target import Reply, running_target


def test_a_redirect_off_the_connections_hosts_is_refused_until_allowed(
    admin: httpx.Client, settings: Settings, database: Database
) -> None:
    with running_target("127.0.0.1") as crm, running_target("127.0.0.2") as elsewhere:
        elsewhere.on("/landing", Reply(200, {"landed": True}))
        crm.on("/users", Reply(302, "", headers={"Location": f"{elsewhere.url}/landing"}))
        app_id = make_application(admin)
        connection = make_connection(
            admin, app_id, crm.url, auth_kind="api_key_header", auth_settings={"header": "X-Key"}
        )
        put_credential(admin, connection["id"], {"api_key": "key-never-elsewhere-4711"})
        wf = publish(database, http_workflow("redirected", app_id, path="/users"))
        with connection_worker(settings, database, outbound=_loopbacks()):
            refused = wait_status(database, start(database, wf), "failed", "succeeded")
        assert refused["status"] == "failed"
        failure = refused["failure"]
        assert failure["class"] == "safety"
        assert "127.0.0.2" in failure["message"]
        assert "allowed_hosts" in failure["next_action"]
        assert elsewhere.calls() == []

        ok(
            admin.patch(
                f"{API}/connections/{connection['id']}", json={"allowed_hosts": ["127.0.0.2"]}
            )
        )
        with connection_worker(settings, database, outbound=_loopbacks()):
            allowed = wait_status(database, start(database, wf), "failed", "succeeded")
        assert allowed["status"] == "succeeded", allowed["failure"]
        assert allowed["steps"][0]["output"] == {"landed": True}
        [landed] = elsewhere.calls("/landing")
        assert landed.headers.get("x-key") == "key-never-elsewhere-4711"


def _loopbacks() -> OutboundPolicy:
    return OutboundPolicy.parse(["127.0.0.1", "127.0.0.2"])
