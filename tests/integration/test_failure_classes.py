"""Failure classes of connector and configuration faults, on both databases: a connection that
does not exist or is of the wrong kind, or a worker without the master key, is `configuration`;
a connection that cannot be used (disconnected, redirecting without end) is `connector`; an HTTP
4xx stays `permanent`. Nothing is sent in the configuration cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from grantflow.config import Settings
from grantflow.store.database import Database
from tests.support.connections import (
    allowing_loopback,
    connection_worker,
    http_workflow,
    make_application,
    make_connection,
    put_credential,
)
from tests.support.engine import publish, running_worker, start, wait_status
from tests.support.target import Reply, running_target


@pytest.fixture
def settings(database: Database, tmp_path: Path) -> Settings:
    return allowing_loopback(database, tmp_path)


def failure_of(database: Database, workflow_id: str, **worker: Any) -> dict[str, Any]:
    run_id = start(database, workflow_id, {"connection": "nowhere"})
    shown = wait_status(database, run_id, "failed", "succeeded")
    assert shown["status"] == "failed"
    failure: dict[str, Any] = shown["failure"]
    return failure


def test_a_missing_or_wrong_kind_of_connection_is_a_configuration_failure(
    admin: httpx.Client, database: Database, settings: Settings
) -> None:
    """A step naming (by template) a connection that does not exist, and a SCIM step on an
    http connection, fail with class configuration and their codes; nothing is sent."""
    with running_target() as target:
        app_id = make_application(admin)
        make_connection(admin, app_id, target.url, name="crm")
        missing = http_workflow("missing", app_id, connection="{{ input.connection }}")
        scim = {
            "name": "wrong-kind",
            "application": app_id,
            "trigger": {"type": "manual"},
            "steps": [
                {
                    "id": "create",
                    "type": "scim.create_user",
                    "config": {"connection": "crm", "user_name": "ada@example.com"},
                }
            ],
        }
        with connection_worker(settings, database):
            absent = failure_of(database, publish(database, missing))
            wrong = failure_of(database, publish(database, scim))
        assert target.calls() == []
    assert (absent["class"], absent["code"]) == ("configuration", "connection_missing")
    assert "'nowhere' does not exist" in absent["message"]
    assert (wrong["class"], wrong["code"]) == ("configuration", "wrong_connection_kind")
    assert "scim connection" in wrong["next_action"]


def test_a_worker_without_the_master_key_fails_the_step_as_configuration(
    admin: httpx.Client, database: Database
) -> None:
    """A connection with a credential, used by a worker started without the master key:
    class configuration, naming the worker's configuration; nothing is sent."""
    with running_target() as target:
        app_id = make_application(admin)
        conn = make_connection(admin, app_id, target.url, auth_kind="bearer")
        put_credential(admin, conn["id"], {"token": "tok-4711-abcdef"})
        wf = publish(database, http_workflow("keyless", app_id))
        with running_worker(database):  # (no keyring)
            failure = failure_of(database, wf)
        assert target.calls() == []
    assert failure["class"] == "configuration"
    assert "master key" in failure["message"]


def test_an_unusable_connection_is_a_connector_failure_and_a_4xx_stays_permanent(
    admin: httpx.Client, database: Database, settings: Settings
) -> None:
    """A target that redirects without end is `connector` (too_many_redirects); a 404 from
    the same connection stays `permanent`."""
    with running_target() as target:
        target.on("/loop", Reply(302, headers={"Location": "/loop"}))
        target.on("/gone", Reply(404, {"error": "no such thing"}))
        app_id = make_application(admin)
        make_connection(admin, app_id, target.url)
        looping = publish(database, http_workflow("looping", app_id, path="/loop"))
        gone = publish(database, http_workflow("gone", app_id, path="/gone"))
        with connection_worker(settings, database):
            redirected = failure_of(database, looping)
            missing = failure_of(database, gone)
    assert (redirected["class"], redirected["code"]) == ("connector", "too_many_redirects")
    assert "base URL" in redirected["next_action"]
    assert (missing["class"], missing["code"], missing["status_code"]) == (
        "permanent",
        "permanent_error",
        404,
    )
