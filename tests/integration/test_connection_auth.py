"""Every static auth kind against a real local server that checks the exact header or query
parameter: an http step with `connection:` + `path:` succeeds with the right credential and fails
(permanent, with the credential as the next action) with a wrong one. Also the connection's
max_concurrency and rate limit, measured on the server."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

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
from tests.support.engine import publish, start, wait_status
from tests.support.target import Reply, Seen, Target, running_target


@pytest.fixture
def settings(database: Database, tmp_path: Path) -> Settings:
    return allowing_loopback(database, tmp_path)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# kind, auth_settings, the right secret, a wrong secret, and what the server must see
KINDS: dict[str, tuple[dict[str, Any], dict[str, str], dict[str, str]]] = {
    "bearer": ({}, {"token": "tok-right-4711"}, {"token": "tok-wrong-0815"}),
    "basic": (
        {},
        {"username": "svc", "password": "pw-right-4711"},
        {"username": "svc", "password": "pw-wrong-0815"},
    ),
    "api_key_header": (
        {"header": "X-Api-Key"},
        {"api_key": "key-right-4711"},
        {"api_key": "key-wrong-0815"},
    ),
    "api_key_query": (
        {"param": "apikey"},
        {"api_key": "key-right-4711"},
        {"api_key": "key-wrong-0815"},
    ),
}


def _authorised(kind: str, seen: Seen) -> bool:
    query = parse_qs(urlsplit(seen.path).query)
    if kind == "bearer":
        return seen.headers.get("authorization") == "Bearer tok-right-4711"
    if kind == "basic":
        return seen.headers.get("authorization") == _basic("svc", "pw-right-4711")
    if kind == "api_key_header":
        return seen.headers.get("x-api-key") == "key-right-4711"
    return query.get("apikey") == ["key-right-4711"] and "authorization" not in seen.headers


@pytest.mark.parametrize("kind", list(KINDS))
def test_auth_kind_reaches_a_checking_server_and_a_wrong_credential_fails(
    kind: str, api: Any, admin: httpx.Client, settings: Settings, database: Database
) -> None:
    """The right credential is sent exactly as the kind says; a wrong one is a permanent 401."""
    auth_settings, right, wrong = KINDS[kind]
    with running_target() as target:
        target.respond(
            "/v2/users",
            lambda seen: Reply(200, {"ok": True})
            if _authorised(kind, seen)
            else Reply(401, {"error": "unauthorised"}),
        )
        app_id = make_application(admin)
        connection = make_connection(
            admin,
            app_id,
            f"{target.url}/v2",
            auth_kind=kind,
            auth_settings=auth_settings,
        )
        assert connection["status"] == "disconnected"
        put_credential(admin, connection["id"], right)
        wf = publish(database, http_workflow("auth", app_id, path="/users?page=1"))
        with connection_worker(settings, database):
            good = start(database, wf)
            shown = wait_status(database, good, "succeeded", "failed")
            assert shown["status"] == "succeeded", shown["failure"]
            assert shown["steps"][0]["output"] == {"ok": True}

            put_credential(admin, connection["id"], wrong)
            bad = start(database, wf)
            failed = wait_status(database, bad, "failed", "succeeded")
    assert failed["status"] == "failed"
    failure = failed["failure"]
    assert failure["class"] == "permanent"
    assert "HTTP 401" in failure["message"]
    assert "credential" in failure["next_action"]
    assert failed["steps"][0]["attempts"] == 1  # a 4xx is never retried
    first = target.calls("/v2/users")[0]
    assert parse_qs(urlsplit(first.path).query)["page"] == ["1"]  # the step's own query kept
    # the credential's value is in no run record
    for secret in (*right.values(), *wrong.values()):
        if secret != "svc":
            assert secret not in str(shown)
            assert secret not in str(failed)
    credential = admin.get(f"/api/v1/connections/{connection['id']}").json()["credential"]
    assert credential["kind"] == kind
    assert credential["last_used_at"] is not None
    assert credential["replaced_at"] is not None


def _peak_of(target: Target) -> int:
    with target.lock:
        return target.peak


def test_max_concurrency_one_never_overlaps_calls(
    api: Any, admin: httpx.Client, settings: Settings, database: Database
) -> None:
    """With max_concurrency 1, four runs on an eight-slot worker call the target one at a time."""
    with running_target() as target:
        target.on("/slow", Reply(200, {"ok": True}, delay=0.05))
        app_id = make_application(admin)
        connection = make_connection(
            admin, app_id, target.url, auth_kind="none", max_concurrency=1
        )
        assert connection["status"] == "connected"  # no credential needed
        wf = publish(database, http_workflow("serial", app_id, path="/slow"))
        with connection_worker(settings, database, concurrency=8):
            runs = [start(database, wf) for _ in range(4)]
            for run_id in runs:
                assert wait_status(database, run_id, "succeeded", "failed")["status"] == (
                    "succeeded"
                )
    assert len(target.calls("/slow")) == 4
    assert _peak_of(target) == 1


def test_without_max_concurrency_calls_do_overlap(
    api: Any, admin: httpx.Client, settings: Settings, database: Database
) -> None:
    """The control: without the cap, held calls of parallel runs are in flight together."""
    with running_target() as target:
        target.on("/slow", Reply(200, {"ok": True}, delay=0.3))
        app_id = make_application(admin)
        make_connection(admin, app_id, target.url, auth_kind="none")
        wf = publish(database, http_workflow("parallel", app_id, path="/slow"))
        with connection_worker(settings, database, concurrency=4):
            runs = [start(database, wf) for _ in range(3)]
            for run_id in runs:
                wait_status(database, run_id, "succeeded", "failed")
    assert _peak_of(target) >= 2


def test_rate_limit_paces_calls(
    api: Any, admin: httpx.Client, settings: Settings, database: Database
) -> None:
    """A limit of 10/s with a burst of 1 spaces the server-side arrivals about 0.1 s apart."""
    arrivals: list[float] = []

    def stamp(_seen: Seen) -> Reply:
        arrivals.append(time.monotonic())
        return Reply(200, {"ok": True})

    with running_target() as target:
        target.respond("/paced", stamp)
        app_id = make_application(admin)
        make_connection(
            admin,
            app_id,
            target.url,
            auth_kind="none",
            rate_limit_per_second=10,
            rate_limit_burst=1,
        )
        wf = publish(database, http_workflow("paced", app_id, path="/paced", steps=4))
        with connection_worker(settings, database):
            run_id = start(database, wf)
            assert wait_status(database, run_id, "succeeded", "failed")["status"] == "succeeded"
    assert len(arrivals) == 4
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert all(gap >= 0.08 for gap in gaps), gaps
