"""Idempotency-Key on creating POSTs, over real HTTP on both databases: a retry returns the first
response (marked replayed) and creates nothing; the key is bound to its request and its user;
racing duplicates create one object; failures are not kept; expired keys create anew."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import httpx
from sqlalchemy import func, select, update

from grantflow.access.models import Grant, Identity
from grantflow.api.idempotency import purge_expired
from grantflow.auth.models import IdempotencyKey
from grantflow.auth.permissions import Role
from grantflow.engine.models import Run
from grantflow.store.base import utcnow
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.connections import API, make_application, ok
from tests.support.engine import publish, workflow

KEY = "Idempotency-Key"
REPLAYED = "Idempotency-Replayed"


def count(database: Database, model: type[Any]) -> int:
    with database.transaction() as session:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())


def a_workflow(database: Database) -> str:
    step = {"id": "greet", "type": "set", "config": {"values": {"hi": "{{ input.name }}"}}}
    return publish(database, workflow("hello", step))


def test_a_retry_returns_the_same_run_and_starts_none(
    admin: httpx.Client, database: Database
) -> None:
    """The same POST with the same key: the first response again, marked replayed; one run."""
    runs = f"{API}/workflows/{a_workflow(database)}/runs"
    first = admin.post(runs, json={"input": {"name": "ada"}}, headers={KEY: "start-ada-1"})
    assert first.status_code == 201, first.text
    assert REPLAYED not in first.headers
    again = admin.post(runs, json={"input": {"name": "ada"}}, headers={KEY: "start-ada-1"})
    assert again.status_code == 201
    assert again.headers[REPLAYED] == "true"
    assert again.json() == first.json()
    assert count(database, Run) == 1
    # the body's key order and spacing do not make it another request
    spaced = admin.post(
        runs,
        content=b'{ "input" : { "name" : "ada" } }',
        headers={KEY: "start-ada-1", "Content-Type": "application/json"},
    )
    assert spaced.headers[REPLAYED] == "true"
    assert spaced.json()["id"] == first.json()["id"]
    # without a key, or with another one, each request starts a run
    ok(admin.post(runs, json={"input": {"name": "ada"}}), 201)
    ok(admin.post(runs, json={"input": {"name": "ada"}}, headers={KEY: "start-ada-2"}), 201)
    assert count(database, Run) == 3


def test_the_same_key_for_another_request_is_a_422_naming_the_header(
    admin: httpx.Client, database: Database
) -> None:
    """Another body, or another path, with a used key: 422 naming Idempotency-Key; nothing
    created."""
    wf = a_workflow(database)
    runs = f"{API}/workflows/{wf}/runs"
    ok(admin.post(runs, json={"input": {"name": "ada"}}, headers={KEY: "k1"}), 201)
    other_body = admin.post(runs, json={"input": {"name": "bob"}}, headers={KEY: "k1"})
    assert other_body.status_code == 422, other_body.text
    error = other_body.json()["error"]
    assert error["code"] == "idempotency_key_reused"
    assert error["message"].startswith("Idempotency-Key: ")
    assert "with a different body" in error["message"]
    assert [d["field"] for d in error["details"]] == ["header.Idempotency-Key"]
    other_path = admin.post(
        f"{API}/identities", json={"email": "a@example.com"}, headers={KEY: "k1"}
    )
    assert other_path.status_code == 422
    assert f"POST /api/v1/workflows/{wf}/runs" in other_path.json()["error"]["message"]
    assert count(database, Run) == 1
    assert count(database, Identity) == 0


def test_racing_requests_with_one_key_create_one_run(
    admin: httpx.Client, database: Database
) -> None:
    """Eight requests sent at once with one key: one run; every answer names it; all but one
    are replays."""
    runs = f"{API}/workflows/{a_workflow(database)}/runs"
    start = threading.Barrier(8)
    answers: list[httpx.Response] = []

    def send() -> None:
        start.wait()
        answers.append(admin.post(runs, json={"input": {"name": "ada"}}, headers={KEY: "race"}))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [a.status_code for a in answers] == [201] * 8, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert sorted(a.headers.get(REPLAYED, "") for a in answers) == [""] + ["true"] * 7
    assert count(database, Run) == 1


def test_a_key_is_scoped_to_its_user(api: Api, admin: httpx.Client, database: Database) -> None:
    """Two users sending the same key start one run each, and each retry replays its own."""
    runs = f"{API}/workflows/{a_workflow(database)}/runs"
    with api.as_role(Role.OPERATOR, "op@example.com") as operator:
        mine = ok(admin.post(runs, json={"input": {}}, headers={KEY: "shared"}), 201)
        theirs = ok(operator.post(runs, json={"input": {}}, headers={KEY: "shared"}), 201)
        assert mine["id"] != theirs["id"]
        again = operator.post(runs, json={"input": {}}, headers={KEY: "shared"})
        assert again.headers[REPLAYED] == "true"
        assert again.json()["id"] == theirs["id"]
    assert count(database, Run) == 2


def test_a_failed_request_keeps_nothing_and_its_retry_runs_anew(
    admin: httpx.Client, database: Database
) -> None:
    """A refused request stores no response: the same key works once the request is fixed."""
    ada = ok(admin.post(f"{API}/identities", json={"email": "ada@example.com"}), 201)
    body = {"identity": ada["id"], "application": "Acme CRM"}
    missing = admin.post(f"{API}/grants", json=body, headers={KEY: "grant-1"})
    assert missing.status_code == 404  # no such application yet
    assert count(database, IdempotencyKey) == 0
    make_application(admin, "Acme CRM")
    granted = ok(admin.post(f"{API}/grants", json=body, headers={KEY: "grant-1"}), 201)
    again = admin.post(f"{API}/grants", json=body, headers={KEY: "grant-1"})
    assert again.headers[REPLAYED] == "true"
    assert again.json()["id"] == granted["id"]
    assert count(database, Grant) == 1


def test_identities_dispatch_and_leave_take_a_key_too(
    admin: httpx.Client, database: Database
) -> None:
    """Creating an identity, dispatching a grant and offboarding replay on retry."""
    person = {"email": "ada@example.com"}
    created = ok(admin.post(f"{API}/identities", json=person, headers={KEY: "id-1"}), 201)
    again = admin.post(f"{API}/identities", json=person, headers={KEY: "id-1"})
    assert (again.status_code, again.headers[REPLAYED]) == (201, "true")
    assert again.json()["id"] == created["id"]
    assert count(database, Identity) == 1
    app = make_application(admin)
    step = {"id": "grant", "type": "set", "config": {"values": {"ok": True}}}
    document = {"name": "G", "application": app, "trigger": {"type": "access_granted"}}
    wf = ok(admin.post(f"{API}/workflows", json={**document, "steps": [step]}), 201)
    body = {"identity": created["id"], "application": app}
    grant = ok(admin.post(f"{API}/grants", json=body), 201)  # (before publishing: no run yet)
    ok(admin.post(f"{API}/workflows/{wf['workflow']['id']}/versions/1/publish"))
    dispatch = f"{API}/grants/{grant['id']}/dispatch"
    first = ok(admin.post(dispatch, headers={KEY: "d-1"}))
    assert len(first["started"]) == 1
    replayed = admin.post(dispatch, headers={KEY: "d-1"})
    assert replayed.headers[REPLAYED] == "true"
    assert replayed.json() == first
    assert count(database, Run) == 1
    leave = f"{API}/identities/{created['id']}/leave"
    left = ok(admin.post(leave, headers={KEY: "leave-1"}))
    assert admin.post(leave, headers={KEY: "leave-1"}).json() == left


def test_an_expired_key_is_purged_and_creates_anew(admin: httpx.Client, database: Database) -> None:
    """Past its lifetime a key is forgotten: the next keyed request purges it, and a retry with
    it starts a new run."""
    runs = f"{API}/workflows/{a_workflow(database)}/runs"
    first = ok(admin.post(runs, json={"input": {}}, headers={KEY: "old"}), 201)
    ok(admin.post(runs, json={"input": {"n": 1}}, headers={KEY: "other"}), 201)
    with database.transaction() as session:
        session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key == "old")
            .values(expires_at=utcnow() - dt.timedelta(seconds=1))
        )
    later = admin.post(runs, json={"input": {}}, headers={KEY: "old"})
    assert later.status_code == 201
    assert REPLAYED not in later.headers
    assert later.json()["id"] != first["id"]
    assert count(database, Run) == 3
    with database.transaction() as session:
        kept = session.execute(select(IdempotencyKey.key, IdempotencyKey.expires_at)).all()
    assert sorted(k for k, _ in kept) == ["old", "other"]
    assert all(at > utcnow() for _, at in kept)
    assert purge_expired(database, now=utcnow() + dt.timedelta(hours=25)) == 2
    assert count(database, IdempotencyKey) == 0


def test_the_key_is_documented_and_checked(admin: httpx.Client) -> None:
    """The OpenAPI document names the header on the creating POSTs; a malformed key is a 422."""
    document = ok(admin.get(f"{API}/openapi.json"))
    for path in (
        "/api/v1/workflows/{workflow_id}/runs",
        "/api/v1/runs/{run_id}/replay",
        "/api/v1/grants",
        "/api/v1/grants/{grant_id}/dispatch",
        "/api/v1/identities",
        "/api/v1/identities/{identity_id}/leave",
        "/api/v1/jobs/{job_id}/run-now",
    ):
        operation = document["paths"][path]["post"]
        assert KEY in [p["name"] for p in operation["parameters"] if p["in"] == "header"], path
        success = next(v for k, v in operation["responses"].items() if k.startswith("2"))
        assert REPLAYED in success["headers"], path
    for bad in ("has space", "x" * 256):
        response = admin.post(
            f"{API}/identities", json={"email": "a@example.com"}, headers={KEY: bad}
        )
        assert response.status_code == 422, response.text
        assert [d["field"] for d in response.json()["error"]["details"]] == [
            "header.Idempotency-Key"
        ]
