"""Idempotency-Key on creating POSTs, over real HTTP on both databases: a retry returns the first
response (marked replayed) and creates nothing; the key is bound to its request and its user;
racing duplicates create one object; failures are not kept; expired keys create anew."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import httpx
from sqlalchemy import func, select, update

from grantflow.access.models import Evidence, Grant, Identity
from grantflow.api.idempotency import purge_expired
from grantflow.auth.models import IdempotencyKey
from grantflow.auth.permissions import Role
from grantflow.engine.models import Run
from grantflow.governance.models import AccessReview, ControlEvaluation, Report
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


def test_revoke_reviews_reports_controls_and_notes_replay_too(
    admin: httpx.Client, database: Database
) -> None:
    """Each of these, sent twice with one key, answers the first response again (marked
    replayed) and creates one object."""
    person = ok(admin.post(f"{API}/identities", json={"email": "ada@example.com"}), 201)
    app = make_application(admin)
    grant = ok(
        admin.post(f"{API}/grants", json={"identity": person["id"], "application": app}), 201
    )
    run = ok(admin.post(f"{API}/workflows/{a_workflow(database)}/runs", json={"input": {}}), 201)
    review = {
        "name": "Q1",
        "reviewer": "users",
        "users": ["ada@example.com"],
        "fallback": {"users": ["ada@example.com"]},
    }
    cases: list[tuple[str, dict[str, Any] | None, type[Any] | None, int]] = [
        (f"{API}/grants/{grant['id']}/revoke", {"comment": "left"}, None, 200),
        (f"{API}/reviews", review, AccessReview, 201),
        (f"{API}/reports", {"kind": "grants_by_application"}, Report, 201),
        (f"{API}/controls/evaluate", {"controls": ["approvals_pending"]}, ControlEvaluation, 201),
        (f"{API}/runs/{run['id']}/notes", {"note": "checked by hand"}, Evidence, 201),
    ]
    for n, (path, body, model, status) in enumerate(cases):
        first = admin.post(path, json=body, headers={KEY: f"case-{n}"})
        assert first.status_code == status, (path, first.text)
        assert REPLAYED not in first.headers
        again = admin.post(path, json=body, headers={KEY: f"case-{n}"})
        assert (again.status_code, again.headers.get(REPLAYED)) == (status, "true"), path
        assert again.json() == first.json(), path
        if model is not None:
            assert count(database, model) == 1, path
    revoked = ok(admin.get(f"{API}/grants/{grant['id']}"))
    assert revoked["status"] in ("revoked", "revoking")


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


# Every POST under /api/v1 that creates something takes an Idempotency-Key; the others, and
# why a retry of them is already safe (or why a key may not be kept for them).
NOT_KEYED = {
    "/api/v1/applications": "names are unique: a retry is refused with 409 naming it",
    "/api/v1/audit/verify": "reads the chain; creates nothing",
    "/api/v1/users": "e-mails are unique: a retry is refused with 409 naming it",
    "/api/v1/users/{user_id}/tokens": "the answer holds the token, which is never stored",
    "/api/v1/me/tokens": "the answer holds the token, which is never stored",
    "/api/v1/scim-tokens": "the answer holds the token, which is never stored",
    "/api/v1/tokens/{token_id}/revoke": "a change of state: a second revoke changes nothing",
    "/api/v1/workflows": "names are unique: a retry is refused with 409 naming it",
    "/api/v1/workflows/apply": "idempotent by design: the same document changes nothing",
    "/api/v1/workflows/{workflow_id}/disable": "a change of state",
    "/api/v1/workflows/{workflow_id}/enable": "a change of state",
    "/api/v1/workflows/{workflow_id}/versions": "writes the one draft: a retry rewrites it",
    "/api/v1/workflows/{workflow_id}/versions/{number}/recompile": "rewrites the same plan",
    "/api/v1/workflows/{workflow_id}/versions/{number}/validate": "reads; creates nothing",
    "/api/v1/workflows/{workflow_id}/versions/{number}/publish": "a change of state",
    "/api/v1/workflows/{workflow_id}/versions/{number}/activate": "a change of state",
    "/api/v1/workflows/{workflow_id}/versions/{number}/dry-run": "creates nothing",
    "/api/v1/runs/{run_id}/retry": "a change of state: refused once the run moved on",
    "/api/v1/runs/{run_id}/cancel": "a change of state",
    "/api/v1/runs/{run_id}/pause": "a change of state",
    "/api/v1/runs/{run_id}/resume": "a change of state",
    "/api/v1/applications/{application_id}/connections": "names are unique: 409 on a retry",
    "/api/v1/connections/{connection_id}/test": "a check; its newest result is the one shown",
    "/api/v1/notifications/read-all": "a change of state",
    "/api/v1/notifications/{notification_id}/read": "a change of state",
    "/api/v1/identities/import": "rows match identities by e-mail: a re-import changes nothing",
    "/api/v1/identity-imports": "rows match identities by e-mail: a second import of the file "
    "changes nothing",
    "/api/v1/identity-imports/{import_id}/cancel": "a change of state",
    "/api/v1/grants/{grant_id}/extend": "sets the expiry: a retry sets the same",
    "/api/v1/incidents/{incident_id}/resolve": "a change of state",
    "/api/v1/runs/{run_id}/evidence": "a multipart body differs per send (its boundary), so a "
    "key could not bind it; each file's SHA-256 is shown",
    "/api/v1/applications/{app_id}/reconcile": "a comparison at a time: the newest report "
    "is the one that counts",
    "/api/v1/tasks/{task_id}/reassign": "a change of state",
    "/api/v1/tasks/{task_id}/{action}": "a decision: a second one is refused with 409",
    "/api/v1/links/{token}": "a single-use link: the token is the key",
    "/api/v1/emails/{email_id}/resend": "asks for one more sending, on purpose",
    "/api/v1/reviews/items/{item_id}/decide": "a decision on one item: it can be changed",
    "/api/v1/reviews/{review_id}/items/{item_id}/decide": "a decision on one item",
    "/api/v1/reviews/{review_id}/close": "a change of state",
    "/api/v1/jobs": "names are unique: a retry is refused with 409 naming it",
    "/api/v1/jobs/preview": "creates nothing",
    "/api/v1/jobs/{job_id}/pause": "a change of state",
    "/api/v1/jobs/{job_id}/resume": "a change of state",
    "/api/v1/jobs/{job_id}/enable": "a change of state",
    "/api/v1/jobs/{job_id}/disable": "a change of state",
    "/hooks/{workflow_key}": "the sender's delivery id is the key (a repeat starts no run)",
    "/api/v1/workflows/{workflow_id}/webhook-secret": "the answer holds the secret, which is "
    "never stored",
    "/api/v1/workflows/{workflow_id}/resume-safety": "a change of state",
}


def test_every_creating_post_takes_the_key_and_documents_it(admin: httpx.Client) -> None:
    """The OpenAPI document names the header (and the replay header) on every POST but those
    listed above with their reason; a malformed key is a 422."""
    document = ok(admin.get(f"{API}/openapi.json"))
    posts = {path: ops["post"] for path, ops in document["paths"].items() if "post" in ops}
    keyed = {
        path
        for path, operation in posts.items()
        if KEY in [p["name"] for p in operation.get("parameters", []) if p["in"] == "header"]
    }
    assert keyed.isdisjoint(NOT_KEYED), keyed & set(NOT_KEYED)
    assert set(posts) - keyed == set(NOT_KEYED), "a new POST: take the key or say why not"
    assert {
        "/api/v1/workflows/{workflow_id}/runs",
        "/api/v1/runs/{run_id}/replay",
        "/api/v1/grants",
        "/api/v1/grants/{grant_id}/revoke",
        "/api/v1/grants/{grant_id}/dispatch",
        "/api/v1/identities",
        "/api/v1/identities/{identity_id}/leave",
        "/api/v1/jobs/{job_id}/run-now",
        "/api/v1/reviews",
        "/api/v1/reports",
        "/api/v1/controls/evaluate",
        "/api/v1/runs/{run_id}/notes",
    } <= keyed
    for path in keyed:
        success = next(v for k, v in posts[path]["responses"].items() if k.startswith("2"))
        assert REPLAYED in success["headers"], path
    for bad in ("has space", "x" * 256):
        response = admin.post(
            f"{API}/identities", json={"email": "a@example.com"}, headers={KEY: bad}
        )
        assert response.status_code == 422, response.text
        assert [d["field"] for d in response.json()["error"]["details"]] == [
            "header.Idempotency-Key"
        ]
