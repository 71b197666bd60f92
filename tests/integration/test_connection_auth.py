"""Every static auth kind against a real local server that checks the exact header or query
parameter: an http step with `connection:` + `path:` succeeds with the right credential and fails
(permanent, with the credential as the next action) with a wrong one. Also the connection's
max_concurrency and rate limit, measured on the server."""

from __future__ import annotations

import base64
import itertools
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


def test_every_auth_kind_reaches_a_checking_server_and_a_wrong_credential_fails(
    api: Any, admin: httpx.Client, settings: Settings, database: Database
) -> None:
    """Each kind sends its credential exactly as it says; a wrong one is a permanent 401."""
    with running_target() as target:
        app_id = make_application(admin)
        connections, workflows = {}, {}
        for kind, (auth_settings, right, _) in KINDS.items():
            target.respond(
                f"/{kind}/users",
                lambda seen, kind=kind: (
                    Reply(200, {"ok": kind})
                    if _authorised(kind, seen)
                    else Reply(401, {"error": "unauthorised"})
                ),
            )
            connection = make_connection(
                admin,
                app_id,
                f"{target.url}/{kind}",
                name=kind,
                auth_kind=kind,
                auth_settings=auth_settings,
            )
            assert connection["status"] == "disconnected"
            shown = put_credential(admin, connection["id"], right)
            assert shown["status"] == "connected"
            connections[kind] = connection["id"]
            workflows[kind] = publish(
                database, http_workflow(kind, app_id, connection=kind, path="/users?page=1")
            )
        with connection_worker(settings, database, concurrency=4):
            good = {kind: start(database, wf) for kind, wf in workflows.items()}
            succeeded = {
                k: wait_status(database, r, "succeeded", "failed") for k, r in good.items()
            }
            for kind, (_, _, wrong) in KINDS.items():
                put_credential(admin, connections[kind], wrong)
            bad = {kind: start(database, wf) for kind, wf in workflows.items()}
            failed = {k: wait_status(database, r, "failed", "succeeded") for k, r in bad.items()}
    for kind, (_, right, wrong) in KINDS.items():
        shown = succeeded[kind]
        assert shown["status"] == "succeeded", (kind, shown["failure"])
        assert shown["steps"][0]["output"] == {"ok": kind}
        assert failed[kind]["status"] == "failed", kind
        failure = failed[kind]["failure"]
        assert failure["class"] == "permanent", kind
        assert "HTTP 401" in failure["message"]
        assert "credential" in failure["next_action"]
        assert failed[kind]["steps"][0]["attempts"] == 1  # a 4xx is never retried
        first = target.calls(f"/{kind}/users")[0]
        assert parse_qs(urlsplit(first.path).query)["page"] == ["1"], kind  # the path's query
        for secret in (*right.values(), *wrong.values()):
            if secret != "svc":  # (the user name is no secret)
                assert secret not in str(shown), kind
                assert secret not in str(failed[kind]), kind
        credential = admin.get(f"/api/v1/connections/{connections[kind]}").json()["credential"]
        assert credential["kind"] == kind
        assert credential["last_used_at"] is not None
        assert credential["replaced_at"] is not None


def _peak_of(target: Target) -> int:
    with target.lock:
        return target.peak


def test_max_concurrency_one_never_overlaps_calls(
    api: Any, admin: httpx.Client, settings: Settings, database: Database
) -> None:
    """With max_concurrency 1 parallel runs call one at a time; an uncapped twin overlaps."""
    with running_target() as capped, running_target() as free:
        capped.on("/slow", Reply(200, {"ok": True}, delay=0.1))
        free.on("/slow", Reply(200, {"ok": True}, delay=0.3))
        app_id = make_application(admin)
        connection = make_connection(
            admin, app_id, capped.url, name="capped", auth_kind="none", max_concurrency=1
        )
        assert connection["status"] == "connected"  # no credential needed
        make_connection(admin, app_id, free.url, name="free", auth_kind="none")
        one = publish(database, http_workflow("capped", app_id, connection="capped", path="/slow"))
        many = publish(database, http_workflow("free", app_id, connection="free", path="/slow"))
        with connection_worker(settings, database, concurrency=8):
            runs = [start(database, wf) for wf in (one, many, one, many, one, many, one)]
            for run_id in runs:
                shown = wait_status(database, run_id, "succeeded", "failed")
                assert shown["status"] == "succeeded", shown["failure"]
    assert len(capped.calls("/slow")) == 4
    assert _peak_of(capped) == 1
    assert _peak_of(free) >= 2


def test_rate_limit_paces_calls(
    api: Any, admin: httpx.Client, settings: Settings, database: Database
) -> None:
    """A limit of 5/s with a burst of 1 spaces the server-side arrivals about 0.2 s apart: no
    window of them holds more requests than the bucket allows."""
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
            rate_limit_per_second=5,
            rate_limit_burst=1,
        )
        wf = publish(database, http_workflow("paced", app_id, path="/paced", steps=4))
        with connection_worker(settings, database):
            run_id = start(database, wf)
            assert wait_status(database, run_id, "succeeded", "failed")["status"] == "succeeded"
    assert len(arrivals) == 4
    # The token bucket's promise (5/s, burst 1): any k + 1 requests span at least (k - 1) / 5 s.
    # A loaded machine may bunch two requests after a delay, never more (the first and last of
    # the four: at least 0.4 s apart; a request that took its token and then arrived late, as
    # on a loaded machine, shortens the span from the 0.6 s the tokens themselves are apart).
    for (i, a), (j, b) in itertools.combinations(enumerate(arrivals), 2):
        assert b - a >= (j - i - 1) / 5 - 0.02, arrivals


def test_a_disconnected_connection_fails_the_run_without_sending_anything(
    api: Any, admin: httpx.Client, settings: Settings, database: Database
) -> None:
    """A disabled or credential-less connection fails the run by name, sending nothing."""
    with running_target() as target:
        target.on("/users", Reply(200, {"ok": True}))
        app_id = make_application(admin)
        disabled = make_connection(admin, app_id, target.url, name="off", auth_kind="bearer")
        put_credential(admin, disabled["id"], {"token": "tok-off-123456"})
        make_connection(admin, app_id, target.url, name="bare", auth_kind="bearer")
        off = publish(database, http_workflow("off", app_id, connection="off", path="/users"))
        bare = publish(database, http_workflow("bare", app_id, connection="bare", path="/users"))
        ok_patch = admin.patch(f"/api/v1/connections/{disabled['id']}", json={"enabled": False})
        assert ok_patch.json()["status"] == "disconnected"
        with connection_worker(settings, database):
            failed = [
                wait_status(database, start(database, wf), "failed", "succeeded")
                for wf in (off, bare)
            ]
    assert target.calls() == []
    for shown, name in zip(failed, ("off", "bare"), strict=True):
        assert shown["status"] == "failed"
        failure = shown["failure"]
        assert failure["class"] == "connector"
        assert failure["code"] == "connection_disconnected"
        assert repr(name) in failure["message"]
        assert "no request was sent" in failure["message"]
    assert "disabled" in failed[0]["failure"]["message"]
    assert "credential" in failed[1]["failure"]["message"]
    assert "set its credential" in failed[1]["failure"]["next_action"]
