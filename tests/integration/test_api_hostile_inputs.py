"""Hostile inputs the API fuzzer found, each a 4xx naming the field and nothing half-written, on
both databases: durations that overflow, unique clashes on update, text no database can store,
booleans where numbers are expected, numbers where times are expected; every error status in the
OpenAPI document; 405 answers that say what is allowed; a deleted identity's events."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from grantflow.engine.models import Run
from grantflow.store.database import Database
from tests.support.connections import API, make_application, ok
from tests.support.engine import publish, workflow

WORKFLOWS = f"{API}/workflows"


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    body: dict[str, Any] = response.json()["error"]
    return body


def fields(body: dict[str, Any]) -> set[str]:
    return {d["field"] for d in body.get("details", [])}


def run_count(database: Database) -> int:
    with database.transaction() as session:
        return int(session.execute(select(func.count()).select_from(Run)).scalar_one())


def a_document(**step_extra: Any) -> dict[str, Any]:
    step = {"id": "a", "type": "set", "config": {"values": {"k": 1}}, **step_extra}
    return workflow("hostile", step)


# --- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step_extra", "field"),
    [
        ({"timeout": 1e16}, "steps[0].timeout"),
        ({"timeout": "99999999999d"}, "steps[0].timeout"),
        ({"timeout": "P99999999999D"}, "steps[0].timeout"),
        (
            {"retry": {"max_attempts": 3, "initial_backoff": 1e300}},
            "steps[0].retry.initial_backoff",
        ),
        ({"retry": {"max_backoff": "9" * 400 + "s"}}, "steps[0].retry.max_backoff"),
    ],
)
def test_a_duration_too_long_is_a_422_naming_the_field(
    admin: httpx.Client, step_extra: dict[str, Any], field: str
) -> None:
    """A step timeout or backoff past ten years (or past what a date can hold) is a 422."""
    body = error(admin.post(WORKFLOWS, json=a_document(**step_extra)), 422)
    assert field in body["message"], body
    assert "cannot be longer than 3650d" in body["message"]
    assert ok(admin.get(WORKFLOWS))["items"] == []


def test_a_review_lasting_forever_is_a_422(admin: httpx.Client) -> None:
    """An access review's duration of 2e51 seconds is a 422 naming body.duration, not a 500."""
    response = admin.post(
        f"{API}/reviews",
        json={
            "name": "forever",
            "reviewer": "roles",
            "roles": ["admin"],
            "fallback": {"roles": ["admin"]},
            "duration": 2.2670513268702274e51,
        },
    )
    assert fields(error(response, 422)) == {"body.duration"}


# --- unique clashes on update ---------------------------------------------------------------


def test_a_user_name_taken_on_patch_is_a_409_naming_it(admin: httpx.Client) -> None:
    """Renaming an identity to another's user_name (in any case) is a 409, not an
    IntegrityError; the identity keeps its name."""
    ok(admin.post(f"{API}/identities", json={"email": "ada@example.com", "user_name": "ada"}), 201)
    bob = ok(admin.post(f"{API}/identities", json={"email": "bob@example.com"}), 201)
    for taken in ("ada", "ADA"):
        body = error(admin.patch(f"{API}/identities/{bob['id']}", json={"user_name": taken}), 409)
        assert fields(body) == {"body.user_name"}
    assert ok(admin.get(f"{API}/identities/{bob['id']}"))["user_name"] == "bob@example.com"


# --- text no database can store -------------------------------------------------------------


@pytest.mark.parametrize(
    "raw_input",
    [
        b'{"input": {"name": "a\\u0000b"}}',
        b'{"input": {"name": "\\ud800"}}',
        b'{"input": {"nested": [{"ok": 1}, {"x\\u0000": "key"}]}}',
        b'{"input": {"pair": "\\ud83d\\ude00", "lone": "\\udfff!"}}',
    ],
)
def test_unstorable_text_in_run_input_is_a_422_and_a_retry_creates_nothing(
    admin: httpx.Client, database: Database, raw_input: bytes
) -> None:
    """A NUL or a lone surrogate anywhere in the input is a 422 naming it before any run
    exists; sending the request again (a client retrying) still creates nothing."""
    wf = publish(database, a_document())
    for _attempt in range(2):
        response = admin.post(
            f"{WORKFLOWS}/{wf}/runs",
            content=raw_input,
            headers={"Content-Type": "application/json"},
        )
        body = error(response, 422)
        assert all(f.startswith("body.input.") for f in fields(body)), body
        assert "NUL" in body["message"] or "lone surrogate" in body["message"]
    assert run_count(database) == 0
    assert ok(admin.get(f"{API}/runs"))["items"] == []
    # a surrogate pair is one character, and is stored like any other
    good = ok(admin.post(f"{WORKFLOWS}/{wf}/runs", json={"input": {"emoji": "\U0001f600"}}), 201)
    assert ok(admin.get(f"{API}/runs/{good['id']}"))["input"] == {"emoji": "\U0001f600"}


def test_unstorable_text_anywhere_in_a_request_is_a_422(admin: httpx.Client) -> None:
    """The query string, the path and every JSON body are checked alike."""
    assert fields(error(admin.get(f"{API}/identities", params={"q": "a\x00"}), 422)) == {"query.q"}
    assert fields(error(admin.get(f"{API}/runs/a%00b"), 422)) == {"path"}
    response = admin.post(
        f"{API}/applications",
        content=b'{"name": "x", "labels": {"team": "\\u0000"}}',
        headers={"Content-Type": "application/json"},
    )
    assert fields(error(response, 422)) == {"body.labels.team"}
    assert ok(admin.get(f"{API}/applications"))["items"] == []


# --- numbers, booleans and times read strictly ----------------------------------------------


def test_booleans_are_not_integers_and_numbers_are_not_times(
    admin: httpx.Client, database: Database
) -> None:
    """`true` where an integer goes, `0` where a boolean goes, a number where a time goes:
    each a 422 naming the field."""
    app = make_application(admin)
    cases = [
        (admin.post(f"{API}/me/tokens", json={"name": "t", "ttl_days": True}), "body.ttl_days"),
        (
            admin.post(
                f"{API}/applications/{app}/connections",
                json={"name": "c", "base_url": "https://x.example.com", "max_concurrency": True},
            ),
            "body.max_concurrency",
        ),
        (
            admin.post(f"{API}/identities", json={"email": "a@example.com", "active": 0}),
            "body.active",
        ),
        (
            admin.post(
                f"{API}/identities", json={"email": "b@example.com", "start_date": 1700000000}
            ),
            "body.start_date",
        ),
        (admin.get(f"{API}/runs", params={"until": "0.5"}), "query.until"),
        (admin.get(f"{API}/audit", params={"since": "1700000000"}), "query.since"),
    ]
    for response, field in cases:
        assert field in fields(error(response, 422)), response.text
    doc = a_document(retry={"max_attempts": True})
    assert "steps[0].retry.max_attempts" in error(admin.post(WORKFLOWS, json=doc), 422)["message"]
    assert ok(admin.get(f"{API}/identities"))["items"] == []


def test_a_huge_version_number_is_a_422(admin: httpx.Client, database: Database) -> None:
    """A version number past what an integer column holds is a 422, not a driver error."""
    wf = publish(database, a_document())
    response = admin.get(f"{WORKFLOWS}/{wf}/versions/{10**30}")
    assert fields(error(response, 422)) == {"path.number"}


@pytest.mark.parametrize(
    "when", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59Z"]
)
def test_a_time_past_the_representable_range_is_a_422(admin: httpx.Client, when: str) -> None:
    """A time that overflows once taken to UTC (or sits at its edge) is a 422 naming it."""
    ok(admin.post(f"{API}/identities", json={"email": "ada@example.com"}), 201)
    make_application(admin, "App")
    body = {"identity": "ada@example.com", "application": "App", "expires_at": when}
    assert fields(error(admin.post(f"{API}/grants", json=body), 422)) == {"body.expires_at"}
    assert fields(error(admin.get(f"{API}/runs", params={"since": when}), 422)) == {"query.since"}
    assert ok(admin.get(f"{API}/grants"))["items"] == []


def test_a_json_body_nested_too_deep_is_a_422_and_creates_nothing(
    admin: httpx.Client, database: Database
) -> None:
    """Run input or attributes nested past 128 levels (whose answer could not even be
    written) are a 422 before anything is created; deep enough to break the JSON parser, or
    with a NUL inside too, the same."""
    wf = publish(database, a_document())
    for depth in (129, 500, 5000):
        nested = b"[" * depth + b"]" * depth
        for url, body in (
            (f"{WORKFLOWS}/{wf}/runs", b'{"input": {"x": ' + nested + b"}}"),
            (f"{WORKFLOWS}/{wf}/runs", b'{"input": {"a": "\\u0000", "x": ' + nested + b"}}"),
            (
                f"{API}/identities",
                b'{"email": "a@example.com", "attributes": {"x": ' + nested + b"}}",
            ),
        ):
            response = admin.post(url, content=body, headers={"Content-Type": "application/json"})
            assert "nested more than 128 levels deep" in error(response, 422)["message"]
    assert run_count(database) == 0
    assert ok(admin.get(f"{API}/identities"))["items"] == []
    # 128 levels are fine
    flat_enough = {"input": {"x": json.loads("[" * 120 + "]" * 120)}}
    ok(admin.post(f"{WORKFLOWS}/{wf}/runs", json=flat_enough), 201)


# --- the OpenAPI document and 405 -----------------------------------------------------------


def test_every_error_status_a_route_can_answer_is_documented(admin: httpx.Client) -> None:
    """Bodies: 400, 404, 409, 413, 415, 422; path ids: 404; guarded routes: 401, 403; each
    with the one error schema."""
    document = ok(admin.get(f"{API}/openapi.json"))
    assert "ErrorOut" in document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            if path.startswith(API):
                assert {"401", "403"} <= statuses, (method, path)
            if method in ("post", "put", "patch"):
                assert {"400", "404", "409", "413", "415", "422"} <= statuses, (method, path)
            if "{" in path:
                assert {"404", "422"} <= statuses, (method, path)
            for status, answer in operation["responses"].items():
                if status.startswith(("4", "5")):
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (method, path)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/identities", "GET, POST"),
        ("DELETE", "/runs", "GET"),
        ("TRACE", "/identities/import", "POST"),
        ("PUT", "/identities/x1", "DELETE, GET, PATCH"),
    ],
)
def test_a_405_says_which_methods_are_allowed(
    admin: httpx.Client, method: str, path: str, allowed: str
) -> None:
    """A method a path does not serve is a 405 whose Allow lists every method it does."""
    response = admin.request(method, f"{API}{path}")
    assert error(response, 405)["code"] == "method_not_allowed"
    assert response.headers["Allow"] == allowed


# --- deleted identities ---------------------------------------------------------------------


def test_a_deleted_identitys_events_are_a_404(admin: httpx.Client) -> None:
    """After DELETE, the identity's events answer 404 saying it was deleted."""
    ada = ok(admin.post(f"{API}/identities", json={"email": "ada@example.com"}), 201)
    assert ok(admin.get(f"{API}/identities/{ada['id']}/events")) != []
    ok(admin.delete(f"{API}/identities/{ada['id']}"))
    body = error(admin.get(f"{API}/identities/{ada['id']}/events"), 404)
    assert body["message"] == f"identity {ada['id']} was deleted"
