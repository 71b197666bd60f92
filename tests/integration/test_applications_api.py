"""Applications over HTTP: create, list, get, update, delete, each audited; bad input is a 4xx."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from grantflow.access import references
from grantflow.audit.models import AuditEntry
from grantflow.auth.permissions import Role
from tests.conftest import Api


def _create(client: httpx.Client, **body: object) -> dict[str, object]:
    response = client.post("/api/v1/applications", json={"name": "Wiki", **body})
    assert response.status_code == 201, response.text
    data: dict[str, object] = response.json()
    return data


def test_create_get_update_delete_round_trip(admin: httpx.Client) -> None:
    """An application goes through its whole life and each change is visible."""
    created = _create(
        admin,
        description="Team wiki",
        kind="saas",
        homepage_url="https://wiki.example.com/",
        labels={"team": "it"},
    )
    app_id = created["id"]
    assert admin.get(f"/api/v1/applications/{app_id}").json()["labels"] == {"team": "it"}

    updated = admin.patch(f"/api/v1/applications/{app_id}", json={"description": "Docs"})
    assert updated.status_code == 200
    assert updated.json()["description"] == "Docs"
    assert updated.json()["name"] == "Wiki"

    assert admin.delete(f"/api/v1/applications/{app_id}").json() == {"deleted": True, "id": app_id}
    missing = admin.get(f"/api/v1/applications/{app_id}")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_every_change_is_audited_with_actor_and_request_id(admin: httpx.Client, api: Api) -> None:
    """Create, update and delete each append an audit entry naming the actor and request id."""
    app_id = _create(admin)["id"]
    admin.patch(
        f"/api/v1/applications/{app_id}",
        json={"kind": "internal"},
        headers={"X-Request-ID": "req-update-1"},
    )
    admin.delete(f"/api/v1/applications/{app_id}")
    with api.database.transaction() as session:
        entries = (
            session.execute(
                select(AuditEntry).where(AuditEntry.target_id == app_id).order_by(AuditEntry.id)
            )
            .scalars()
            .all()
        )
        assert [e.action for e in entries] == [
            "application.created",
            "application.updated",
            "application.deleted",
        ]
        assert {e.actor for e in entries} == {"admin@example.com"}
        assert entries[1].request_id == "req-update-1"
        assert entries[1].summary == {"changes": {"kind": ["saas", "internal"]}}


def test_list_paginates_with_a_cursor_and_filters_by_name(admin: httpx.Client) -> None:
    """Pages follow each other without overlap; the name filter is a case-insensitive substring."""
    for n in range(5):
        _create(admin, name=f"App {n}")
    _create(admin, name="Payroll")
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = admin.get("/api/v1/applications", params=params).json()
        seen.extend(item["name"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["App 0", "App 1", "App 2", "App 3", "App 4", "Payroll"]
    names = [a["name"] for a in admin.get("/api/v1/applications?name=PAY").json()["items"]]
    assert names == ["Payroll"]


def test_duplicate_name_is_409_naming_the_existing_one(admin: httpx.Client) -> None:
    """Names are unique regardless of case; the conflict names the existing application."""
    first = _create(admin)
    response = admin.post("/api/v1/applications", json={"name": "WIKI"})
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["existing_id"] == first["id"]
    assert "'Wiki' already exists" in error["message"]


def test_delete_is_refused_while_referenced(admin: httpx.Client) -> None:
    """A referrer registered by another subsystem blocks deletion with a 409 naming it."""
    app_id = _create(admin)["id"]

    def finder(_session: object, target_id: str) -> list[str]:
        return ["workflow 'Onboard' (wf-1)"] if target_id == app_id else []

    references.register("application", finder)
    try:
        response = admin.delete(f"/api/v1/applications/{app_id}")
    finally:
        references.unregister("application", finder)
    assert response.status_code == 409
    assert response.json()["error"]["referenced_by"] == ["workflow 'Onboard' (wf-1)"]
    assert admin.get(f"/api/v1/applications/{app_id}").status_code == 200


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"name": ""}, "body.name", "at least 1 character"),
        ({"name": "x" * 101}, "body.name", "at most 100"),
        ({"name": 42}, "body.name", "valid string"),
        ({"name": "a\u0007b"}, "body.name", "control characters"),
        ({"name": "A", "kind": "mainframe"}, "body.kind", "must be one of directory, saas"),
        ({"name": "A", "homepage_url": "not a url"}, "body.homepage_url", "valid URL"),
        ({"name": "A", "homepage_url": "ftp://x.example"}, "body.homepage_url", "URL scheme"),
        ({"name": "A", "labels": {"Bad Key": "v"}}, "body.labels", "label key"),
        ({"name": "A", "labels": {"k": 5}}, "body.labels.k", "valid string"),
        ({"name": "A", "labels": ["k"]}, "body.labels", "valid dictionary"),
        ({"name": "A", "description": "d" * 2001}, "body.description", "at most 2000"),
        ({"name": "A", "colour": "red"}, "body.colour", "unknown field"),
        ({}, "body.name", "Field required"),
    ],
)
def test_bad_input_is_422_naming_the_field(
    admin: httpx.Client, body: dict[str, object], field: str, fragment: str
) -> None:
    """Each kind of bad field is a 422 whose details name the field path; nothing is saved."""
    response = admin.post("/api/v1/applications", json=body)
    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    assert any(d["field"] == field and fragment in d["message"] for d in details), details
    assert admin.get("/api/v1/applications").json()["items"] == []


def test_owner_must_be_an_active_user(admin: httpx.Client) -> None:
    """An owner id that names no user is a 422 on body.owner_id."""
    response = admin.post("/api/v1/applications", json={"name": "A", "owner_id": "nobody"})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "body.owner_id"


def test_update_rejects_null_for_required_fields(admin: httpx.Client) -> None:
    """PATCH with name null is a 422, and the application is unchanged."""
    app_id = _create(admin)["id"]
    response = admin.patch(f"/api/v1/applications/{app_id}", json={"name": None})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "body.name"
    assert admin.get(f"/api/v1/applications/{app_id}").json()["name"] == "Wiki"


def test_malformed_json_wrong_type_and_oversized_bodies(admin: httpx.Client) -> None:
    """Broken JSON is 400, a form body 415, a body over the limit 413 — never a 500."""
    broken = admin.post(
        "/api/v1/applications", content=b'{"name": ', headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 400
    assert broken.json()["error"]["code"] == "malformed_json"

    form = admin.post("/api/v1/applications", data={"name": "x"})
    assert form.status_code == 415
    assert "application/json" in form.json()["error"]["message"]

    huge = admin.post("/api/v1/applications", json={"name": "A", "description": "x" * 2_000_000})
    assert huge.status_code == 413
    assert huge.json()["error"]["code"] == "payload_too_large"

    def chunks() -> object:
        yield b'{"name": "A", "description": "'
        for _ in range(20):
            yield b"x" * 100_000
        yield b'"}'

    chunked = admin.post(
        "/api/v1/applications", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert chunked.status_code == 413
    assert admin.get("/api/v1/applications").json()["items"] == []


def test_forged_cursor_is_a_400(admin: httpx.Client) -> None:
    """A cursor that was not issued by the API is refused with a message about the cursor."""
    response = admin.get("/api/v1/applications", params={"cursor": "garbage!!"})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("cursor:")


def test_viewer_can_read_but_not_write(api: Api, admin: httpx.Client) -> None:
    """connection:read lets a viewer list; creating needs connection:write (403 names it)."""
    _create(admin)
    with api.as_role(Role.VIEWER) as viewer:
        assert viewer.get("/api/v1/applications").status_code == 200
        denied = viewer.post("/api/v1/applications", json={"name": "Other"})
    assert denied.status_code == 403
    assert denied.json()["error"]["missing_permission"] == "connection:write"
