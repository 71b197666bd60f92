"""The connections API over real HTTP on both databases: create, list, get, patch, delete under an
application; validation that names the field; write-only credentials with audit entries that
carry no secret; and who may do what."""

from __future__ import annotations

import json
from typing import Any

import httpx

from grantflow.auth.permissions import Role
from tests.support.connections import API, make_application, make_connection, ok, put_credential

BASE = "https://crm.example.com/api"


def _fields(response: httpx.Response) -> str:
    """The error's message and every detail, as one text to look for field names in."""
    assert response.status_code == 422, f"{response.status_code}: {response.text}"
    error = response.json()["error"]
    return error["message"] + " " + json.dumps(error.get("details", []))


def test_create_list_get_patch_delete(api: Any, admin: httpx.Client) -> None:
    """A connection's whole life: created disconnected, listed, read, changed, deleted."""
    app_id = make_application(admin)
    created = make_connection(
        admin,
        app_id,
        BASE,
        auth_kind="api_key_header",
        auth_settings={"header": "X-Api-Key"},
        timeout_seconds=5,
        rate_limit_per_second=5,
        rate_limit_burst=2,
        max_concurrency=3,
        health_check={"path": "/ping", "expect": [200, 204]},
    )
    assert created["application_id"] == app_id
    assert created["kind"] == "http"
    assert created["status"] == "disconnected"
    assert "credential" in created["status_reason"]
    assert created["credential"] is None
    assert created["auth_settings"]["header"] == "X-Api-Key"
    assert created["health_check"]["expect"] == [200, 204]

    listed = ok(admin.get(f"{API}/applications/{app_id}/connections"))
    assert [c["id"] for c in listed] == [created["id"]]
    shown = ok(admin.get(f"{API}/connections/{created['id']}"))
    assert shown["max_concurrency"] == 3
    assert shown["rate_limit_per_second"] == 5

    patched = ok(
        admin.patch(
            f"{API}/connections/{created['id']}",
            json={"timeout_seconds": 9.5, "base_url": "https://crm2.example.com/v2"},
        )
    )
    assert patched["timeout_seconds"] == 9.5
    assert patched["base_url"] == "https://crm2.example.com/v2"

    put_credential(admin, created["id"], {"api_key": "k-1234567890"})
    assert ok(admin.get(f"{API}/connections/{created['id']}"))["status"] == "connected"
    disabled = ok(admin.patch(f"{API}/connections/{created['id']}", json={"enabled": False}))
    assert (disabled["enabled"], disabled["status"]) == (False, "disconnected")
    enabled = ok(admin.patch(f"{API}/connections/{created['id']}", json={"enabled": True}))
    assert enabled["status"] == "connected"

    assert ok(admin.delete(f"{API}/connections/{created['id']}"))["id"] == created["id"]
    assert admin.get(f"{API}/connections/{created['id']}").status_code == 404
    assert ok(admin.get(f"{API}/applications/{app_id}/connections")) == []
    actions = [
        e["action"]
        for e in ok(admin.get(f"{API}/audit", params={"target_id": created["id"]}))["items"]
    ]
    for action in ("connection.created", "connection.updated", "connection.deleted"):
        assert action in actions


BAD_CREATES: list[tuple[dict[str, Any], str]] = [
    ({"base_url": "not a url"}, "base_url"),
    ({"base_url": "ftp://crm.example.com"}, "base_url"),
    ({"auth_kind": "kerberos"}, "auth_kind"),
    ({"auth_kind": "api_key_header"}, "auth_settings.header"),
    ({"auth_kind": "api_key_query"}, "auth_settings.param"),
    ({"auth_kind": "oauth_client_credentials"}, "auth_settings.token_url"),
    ({"auth_kind": "oauth_refresh_token"}, "auth_settings.token_url"),
    ({"timeout_seconds": -1}, "timeout_seconds"),
    ({"max_concurrency": 0}, "max_concurrency"),
    ({"rate_limit_per_second": -2}, "rate_limit_per_second"),
    ({"auth_settings": {"header": "Bad Header!"}}, "auth_settings.header"),
    ({"auth_settings": {"token_url": "not a url"}}, "auth_settings.token_url"),
    ({"health_check": {"method": "POST"}}, "health_check.method"),
    ({"name": ""}, "name"),
    ({"kind": "ldap"}, "kind"),
    ({"colour": "blue"}, "colour"),
]


def test_bad_connection_input_is_422_naming_the_field(api: Any, admin: httpx.Client) -> None:
    """Each bad field is refused with 422 and its name in the error; nothing is created."""
    app_id = make_application(admin)
    for change, field in BAD_CREATES:
        body = {"name": "crm", "base_url": BASE, **change}
        response = admin.post(f"{API}/applications/{app_id}/connections", json=body)
        assert field in _fields(response), change
    assert ok(admin.get(f"{API}/applications/{app_id}/connections")) == []


def test_bad_patches_are_422_naming_the_field(api: Any, admin: httpx.Client) -> None:
    """A patch is validated like a create, including the auth kind's required settings."""
    app_id = make_application(admin)
    connection = make_connection(
        admin, app_id, BASE, auth_kind="api_key_query", auth_settings={"param": "key"}
    )
    url = f"{API}/connections/{connection['id']}"
    assert "timeout_seconds" in _fields(admin.patch(url, json={"timeout_seconds": 0}))
    assert "base_url" in _fields(admin.patch(url, json={"base_url": "nope"}))
    assert "base_url" in _fields(admin.patch(url, json={"base_url": None}))
    assert "auth_settings" in _fields(admin.patch(url, json={"auth_settings": {}}))
    assert "auth_kind" in _fields(admin.patch(url, json={"auth_kind": "bearer"}))
    assert ok(admin.get(url))["auth_settings"]["param"] == "key"


def test_duplicate_name_is_409_and_unknown_ids_404(api: Any, admin: httpx.Client) -> None:
    """Names are unique per application (not globally); unknown ids are 404."""
    app_id = make_application(admin)
    make_connection(admin, app_id, BASE)
    again = admin.post(
        f"{API}/applications/{app_id}/connections", json={"name": "crm", "base_url": BASE}
    )
    assert again.status_code == 409
    assert "crm" in again.json()["error"]["message"]
    other = make_application(admin, "Other app")
    make_connection(admin, other, BASE)  # same name, other application: fine
    assert admin.get(f"{API}/connections/nope").status_code == 404
    assert admin.get(f"{API}/applications/nope/connections").status_code == 404
    missing_app = admin.post(
        f"{API}/applications/nope/connections", json={"name": "crm", "base_url": BASE}
    )
    assert missing_app.status_code == 404
    assert admin.put(f"{API}/connections/nope/credential", json={"token": "x"}).status_code == 404


def test_credential_is_write_only_and_its_audit_entries_carry_no_secret(
    api: Any, admin: httpx.Client
) -> None:
    """Setting and replacing return metadata only; the audit log records kind, never value."""
    app_id = make_application(admin)
    connection = make_connection(admin, app_id, BASE, auth_kind="basic")
    assert connection["status"] == "disconnected"
    first_secret, second_secret = "pw-first-5b1d0e9c", "pw-second-77aa31f0"
    shown = put_credential(admin, connection["id"], {"username": "svc", "password": first_secret})
    assert shown["status"] == "connected"
    assert shown["status_reason"] is None
    assert set(shown["credential"]) == {
        "kind",
        "created_at",
        "created_by",
        "replaced_at",
        "replaced_by",
        "last_used_at",
        "token_expires_at",
        "refreshed_at",
    }
    assert shown["credential"]["kind"] == "basic"
    assert shown["credential"]["created_by"] == "admin@example.com"
    assert shown["credential"]["replaced_at"] is None
    replaced = admin.put(
        f"{API}/connections/{connection['id']}/credential",
        json={"username": "svc", "password": second_secret},
    )
    assert replaced.status_code == 200
    assert replaced.json()["credential"]["replaced_at"] is not None

    entries = ok(admin.get(f"{API}/audit", params={"action": "credential.*"}))["items"]
    assert sorted(e["action"] for e in entries) == ["credential.replaced", "credential.set"]
    assert all(e["target_id"] == connection["id"] for e in entries)
    texts = [
        replaced.text,
        json.dumps(shown),
        admin.get(f"{API}/audit", params={"limit": 200}).text,
        admin.get(f"{API}/connections/{connection['id']}").text,
        admin.get(f"{API}/applications/{app_id}/connections").text,
    ]
    for text in texts:
        assert first_secret not in text
        assert second_secret not in text
    assert ok(admin.get(f"{API}/audit/verify"))["ok"] is True


BAD_SECRETS: list[tuple[str, dict[str, Any], Any, str]] = [
    ("bearer", {}, {"secret": "sk-leak-0001"}, "token"),
    ("bearer", {}, {"token": "sk-leak-0002", "extra": "sk-leak-0003"}, "extra"),
    ("bearer", {}, {"token": ""}, "token"),
    ("bearer", {}, {"token": 12345678}, "token"),
    ("basic", {}, {"password": "sk-leak-0004"}, "username"),
    ("api_key_header", {"header": "X-Key"}, {"token": "sk-leak-0005"}, "api_key"),
    (
        "oauth_client_credentials",
        {"token_url": "https://idp.example.com/token"},
        {"client_id": "c", "secret": "sk-leak-0006"},
        "client_secret",
    ),
    (
        "oauth_refresh_token",
        {"token_url": "https://idp.example.com/token"},
        {"client_id": "c", "client_secret": "sk-leak-0007"},
        "refresh_token",
    ),
    ("bearer", {}, ["sk-leak-0008"], "body"),
]


def test_a_credential_of_the_wrong_shape_is_422_without_echoing_values(
    api: Any, admin: httpx.Client
) -> None:
    """Wrong or missing secret fields are named; no value sent comes back; nothing is stored."""
    app_id = make_application(admin)
    for n, (auth_kind, auth_settings, body, field) in enumerate(BAD_SECRETS):
        connection = make_connection(
            admin, app_id, BASE, name=f"c{n}", auth_kind=auth_kind, auth_settings=auth_settings
        )
        response = admin.put(f"{API}/connections/{connection['id']}/credential", json=body)
        assert field in _fields(response), body
        assert "sk-leak" not in response.text
        assert "12345678" not in response.text
        after = ok(admin.get(f"{API}/connections/{connection['id']}"))
        assert (after["credential"], after["status"]) == (None, "disconnected")


def test_a_connection_without_auth_takes_no_credential(api: Any, admin: httpx.Client) -> None:
    """auth_kind none is connected at once and refuses a credential, naming the auth kind."""
    app_id = make_application(admin)
    connection = make_connection(admin, app_id, BASE)
    assert (connection["auth_kind"], connection["status"]) == ("none", "connected")
    response = admin.put(f"{API}/connections/{connection['id']}/credential", json={"token": "t"})
    assert response.status_code == 422
    assert "none" in response.json()["error"]["message"]


def test_permissions_read_write_and_credential_write(api: Any, admin: httpx.Client) -> None:
    """Viewers read only; editors write connections and credentials; operators cannot."""
    app_id = make_application(admin)
    connection = make_connection(admin, app_id, BASE, auth_kind="bearer")
    cid = connection["id"]
    body = {"name": "second", "base_url": BASE}
    with (
        api.as_role(Role.VIEWER) as viewer,
        api.as_role(Role.OPERATOR) as operator,
        api.as_role(Role.EDITOR) as editor,
        api.client() as anonymous,
    ):
        for client in (viewer, operator, editor):
            assert client.get(f"{API}/applications/{app_id}/connections").status_code == 200
            assert client.get(f"{API}/connections/{cid}").status_code == 200
        assert anonymous.get(f"{API}/connections/{cid}").status_code == 401
        for client in (viewer, operator):
            denied = [
                client.post(f"{API}/applications/{app_id}/connections", json=body),
                client.patch(f"{API}/connections/{cid}", json={"timeout_seconds": 3}),
                client.put(f"{API}/connections/{cid}/credential", json={"token": "t-1"}),
                client.post(f"{API}/connections/{cid}/test"),
                client.delete(f"{API}/connections/{cid}"),
            ]
            assert [r.status_code for r in denied] == [403] * 5
        refused = operator.put(f"{API}/connections/{cid}/credential", json={"token": "t-1"})
        assert "credential:write" in refused.json()["error"]["message"]

        assert editor.post(f"{API}/applications/{app_id}/connections", json=body).status_code == (
            201
        )
        assert editor.put(f"{API}/connections/{cid}/credential", json={"token": "t-2"}).is_success
        assert editor.patch(f"{API}/connections/{cid}", json={"timeout_seconds": 3}).is_success
    shown = ok(admin.get(f"{API}/connections/{cid}"))
    assert shown["credential"]["created_by"] == "editor@example.com"
    assert shown["timeout_seconds"] == 3


def test_deleting_an_application_with_a_connection_is_refused_naming_it(
    api: Any, admin: httpx.Client
) -> None:
    """The application stays while a connection belongs to it; the 409 names the connection."""
    app_id = make_application(admin)
    connection = make_connection(admin, app_id, BASE, name="directory-api")
    refused = admin.delete(f"{API}/applications/{app_id}")
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert "directory-api" in error["message"]
    assert any("directory-api" in r for r in error["referenced_by"])
    assert admin.get(f"{API}/applications/{app_id}").status_code == 200
    ok(admin.delete(f"{API}/connections/{connection['id']}"))
    assert admin.delete(f"{API}/applications/{app_id}").status_code == 200


def _published_workflow_using(admin: httpx.Client, app_id: str, connection_id: str) -> str:
    document = {
        "name": "Uses crm",
        "application": app_id,
        "trigger": {"type": "manual"},
        "steps": [
            {"id": "call", "type": "http", "config": {"connection": "crm", "path": "/users"}}
        ],
    }
    workflow_id = str(ok(admin.post(f"{API}/workflows", json=document), 201)["workflow"]["id"])
    published = ok(admin.post(f"{API}/workflows/{workflow_id}/versions/1/publish"))
    warning = next(w for w in published["warnings"] if w["code"] == "connection_credential_missing")
    assert (warning["step"], "crm" in warning["message"]) == ("call", True)
    return workflow_id


def test_the_publish_gate_checks_the_connection_and_warns_of_its_credential(
    api: Any, admin: httpx.Client
) -> None:
    """A missing connection cannot publish; one without a credential publishes with a warning."""
    app_id = make_application(admin)
    document = {
        "name": "Uses ghost",
        "application": app_id,
        "trigger": {"type": "manual"},
        "steps": [{"id": "call", "type": "http", "config": {"connection": "ghost", "path": "/x"}}],
    }
    workflow_id = ok(admin.post(f"{API}/workflows", json=document), 201)["workflow"]["id"]
    refused = admin.post(f"{API}/workflows/{workflow_id}/versions/1/publish")
    assert refused.status_code == 422
    detail = refused.json()["error"]["details"][0]
    assert (detail["step"], detail["code"]) == ("call", "connection_missing")
    assert "ghost" in detail["message"]
    connection = make_connection(admin, app_id, BASE, auth_kind="bearer")
    _published_workflow_using(admin, app_id, connection["id"])


def test_a_connection_used_by_a_published_workflow_cannot_be_deleted(
    api: Any, admin: httpx.Client
) -> None:
    """Deleting a connection that a published workflow names is refused, naming the workflow."""
    app_id = make_application(admin)
    connection = make_connection(admin, app_id, BASE, auth_kind="bearer")
    _published_workflow_using(admin, app_id, connection["id"])
    refused = admin.delete(f"{API}/connections/{connection['id']}")
    assert refused.status_code == 409
    assert "Uses crm" in refused.json()["error"]["message"]
