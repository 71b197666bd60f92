"""Authentication, users and API tokens over HTTP; every refusal is a JSON error to act on."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import text, update

from grantflow.api.app import create_app
from grantflow.auth.actor import Actor
from grantflow.auth.models import ApiToken
from grantflow.auth.permissions import ROLE_PERMISSIONS, Role, permissions_for
from grantflow.cli.local import AsgiTransport
from grantflow.config import Settings
from tests.conftest import Api


def _assert_unauthenticated(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == "unauthenticated"
    assert error["message"]
    assert error["next_action"]
    return error


def _me(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/api/v1/me")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def _create_user(admin: httpx.Client, email: str, *roles: str) -> dict[str, Any]:
    response = admin.post("/api/v1/users", json={"email": email, "roles": list(roles)})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def _new_token(client: httpx.Client, name: str = "laptop") -> dict[str, Any]:
    response = client.post("/api/v1/me/tokens", json={"name": name})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


# --- 401: who are you? ------------------------------------------------------------------------


def test_missing_authorization_header_is_401(api: Api) -> None:
    """A request without an Authorization header is a 401 JSON error with WWW-Authenticate."""
    with api.client() as anonymous:
        error = _assert_unauthenticated(anonymous.get("/api/v1/me"))
    assert "needs an API token" in error["message"]
    assert error["request_id"]


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Token gft_abc", "gft_abc", "Bearer"])
def test_non_bearer_scheme_is_401(api: Api, header: str) -> None:
    """Any scheme but Bearer, or Bearer without a token, is a 401."""
    with api.client() as anonymous:
        _assert_unauthenticated(anonymous.get("/api/v1/me", headers={"Authorization": header}))


def test_bearer_scheme_is_case_insensitive(api: Api) -> None:
    """`bearer <token>` is accepted like `Bearer <token>` (schemes are case-insensitive)."""
    raw = api.user_token("casual@example.com", Role.VIEWER)
    with api.client() as client:
        response = client.get("/api/v1/me", headers={"Authorization": f"bearer {raw}"})
    assert response.status_code == 200
    assert response.json()["email"] == "casual@example.com"


def test_unknown_token_is_401(api: Api) -> None:
    """A well-formed token that was never issued is a 401 that gives no hint why."""
    with api.client("gft_" + "x" * 43) as client:
        error = _assert_unauthenticated(client.get("/api/v1/me"))
    assert error["message"] == "the API token is not valid"


def test_expired_token_is_401(api: Api) -> None:
    """A token past its expiry is refused with a message saying it expired."""
    with api.as_role(Role.VIEWER) as viewer:
        created = _new_token(viewer)
    with api.database.transaction() as session:
        session.execute(
            update(ApiToken)
            .where(ApiToken.id == created["id"])
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
        )
    with api.client(created["token"]) as client:
        error = _assert_unauthenticated(client.get("/api/v1/me"))
    assert error["message"] == "the API token has expired"


def test_revoked_token_is_401(api: Api) -> None:
    """A token revoked through the API stops working at once; the others keep working."""
    with api.as_role(Role.VIEWER) as viewer:
        created = _new_token(viewer)
        revoked = viewer.post(f"/api/v1/tokens/{created['id']}/revoke")
        assert revoked.status_code == 200
        assert revoked.json()["revoked_at"] is not None
        assert "token" not in revoked.json()
        assert viewer.get("/api/v1/me").status_code == 200
    with api.client(created["token"]) as client:
        error = _assert_unauthenticated(client.get("/api/v1/me"))
    assert error["message"] == "the API token was revoked"


def test_deactivated_users_token_is_401_until_reactivated(api: Api, admin: httpx.Client) -> None:
    """Deactivating a user by PATCH active=false makes their tokens 401; reactivating restores."""
    with api.as_role(Role.OPERATOR) as operator:
        user_id = _me(operator)["id"]
        deactivated = admin.patch(f"/api/v1/users/{user_id}", json={"active": False})
        assert deactivated.status_code == 200
        assert deactivated.json()["active"] is False

        error = _assert_unauthenticated(operator.get("/api/v1/me"))
        assert error["message"] == "the user of this API token is deactivated"

        assert admin.patch(f"/api/v1/users/{user_id}", json={"active": True}).status_code == 200
        assert operator.get("/api/v1/me").status_code == 200


# --- 403: not allowed -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "method", "path", "body", "permission"),
    [
        (Role.VIEWER, "GET", "/api/v1/audit", None, "audit:read"),
        (Role.VIEWER, "GET", "/api/v1/audit/verify", None, "audit:read"),
        (Role.AUDITOR, "POST", "/api/v1/users", {"email": "new@example.com"}, "user:admin"),
        (Role.EDITOR, "GET", "/api/v1/users", None, "user:admin"),
        (Role.APPROVER, "POST", "/api/v1/applications", {"name": "Wiki"}, "connection:write"),
    ],
)
def test_role_without_permission_is_403_naming_it(
    api: Api, role: Role, method: str, path: str, body: object, permission: str
) -> None:
    """A role lacking the route's permission gets 403 naming it, and nothing changes."""
    with api.as_role(role) as client:
        response = client.request(method, path, json=body)
    assert response.status_code == 403, response.text
    assert "www-authenticate" not in response.headers
    error = response.json()["error"]
    assert error["code"] == "permission_denied"
    assert error["missing_permission"] == permission
    assert permission in error["message"]
    assert error["next_action"] == f"ask an admin for a role that includes {permission}"
    if method == "POST" and path.endswith("/users"):
        with api.database.transaction() as session:
            emails = session.execute(text("SELECT email FROM users")).scalars().all()
        assert set(emails) == {f"{role}@example.com"}


# --- users ------------------------------------------------------------------------------------


def test_create_user_with_roles(admin: httpx.Client) -> None:
    """An admin creates a user (201): email normalised, roles sorted, active, and fetchable."""
    created = _create_user(admin, "  Ada.Lovelace@Example.COM ", "viewer", "approver")
    assert created["email"] == "ada.lovelace@example.com"
    assert created["display_name"] == "ada.lovelace"
    assert created["roles"] == ["approver", "viewer"]
    assert created["active"] is True
    fetched = admin.get(f"/api/v1/users/{created['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == created


def test_duplicate_email_is_409_naming_the_existing_user(admin: httpx.Client) -> None:
    """Emails are unique regardless of case; the 409 names the existing user's id."""
    first = _create_user(admin, "grace@example.com")
    response = admin.post("/api/v1/users", json={"email": "GRACE@example.com"})
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "conflict"
    assert error["existing_id"] == first["id"]
    assert "grace@example.com already exists" in error["message"]


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"email": "not-an-email"}, "body.email", "email"),
        ({"email": "a@example.com", "roles": ["superuser"]}, "body.roles.0", "one of admin"),
        ({"email": "a@example.com", "nickname": "al"}, "body.nickname", "unknown field"),
        ({"email": "a@example.com", "password": "short"}, "body.password", "at least 12"),
        ({"email": "a@example.com", "display_name": "  "}, "body.display_name", "at least 1"),
        ({}, "body.email", "Field required"),
    ],
)
def test_bad_user_input_is_422_naming_the_field(
    admin: httpx.Client, body: dict[str, object], field: str, fragment: str
) -> None:
    """Bad email, unknown role or unknown field is a 422 naming the field; no user is created."""
    response = admin.post("/api/v1/users", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert any(d["field"] == field and fragment in d["message"] for d in error["details"]), error
    assert field in error["message"]
    emails = [u["email"] for u in admin.get("/api/v1/users").json()["items"]]
    assert emails == ["admin@example.com"]


def test_list_users_paginates_with_a_cursor_and_filters_by_email(admin: httpx.Client) -> None:
    """Pages of users follow each other in creation order without overlap; email filters."""
    for n in range(5):
        _create_user(admin, f"user{n}@example.com")
    _create_user(admin, "payroll@corp.example")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        response = admin.get("/api/v1/users", params=params)
        assert response.status_code == 200
        page = response.json()
        assert len(page["items"]) <= 2
        seen.extend(item["email"] for item in page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [
        "admin@example.com",
        *(f"user{n}@example.com" for n in range(5)),
        "payroll@corp.example",
    ]
    assert pages == 4
    filtered = admin.get("/api/v1/users", params={"email": "CORP"}).json()
    assert [u["email"] for u in filtered["items"]] == ["payroll@corp.example"]
    forged = admin.get("/api/v1/users", params={"cursor": "bm90LWEtY3Vyc29y"})
    assert forged.status_code == 400


def test_updating_roles_changes_what_the_user_may_do(api: Api, admin: httpx.Client) -> None:
    """Giving a viewer the auditor role lets the same token read the audit log at once."""
    with api.as_role(Role.VIEWER) as viewer:
        user_id = _me(viewer)["id"]
        assert viewer.get("/api/v1/audit").status_code == 403
        updated = admin.patch(f"/api/v1/users/{user_id}", json={"roles": ["auditor", "viewer"]})
        assert updated.status_code == 200
        assert updated.json()["roles"] == ["auditor", "viewer"]
        assert viewer.get("/api/v1/audit").status_code == 200
        assert "audit:read" in _me(viewer)["permissions"]

        assert admin.patch(f"/api/v1/users/{user_id}", json={"roles": []}).json()["roles"] == []
        assert viewer.get("/api/v1/me").status_code == 403


def test_removing_the_last_admin_is_409(api: Api, admin: httpx.Client) -> None:
    """The last active admin cannot lose the admin role; with a second admin it can."""
    me = _me(admin)
    refused = admin.patch(f"/api/v1/users/{me['id']}", json={"roles": ["viewer"]})
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert "last active admin" in error["message"]
    assert error["next_action"] == "give another active user the admin role first"
    assert _me(admin)["roles"] == ["admin"]

    _create_user(admin, "second-admin@example.com", "admin")
    demoted = admin.patch(f"/api/v1/users/{me['id']}", json={"roles": ["viewer"]})
    assert demoted.status_code == 200
    assert demoted.json()["roles"] == ["viewer"]
    assert admin.get("/api/v1/users").status_code == 403


def test_removing_admin_from_a_deactivated_admin_is_allowed(admin: httpx.Client) -> None:
    """A deactivated admin is not the last active admin: its admin role can be removed."""
    other = _create_user(admin, "former-admin@example.com", "admin")
    assert admin.patch(f"/api/v1/users/{other['id']}", json={"active": False}).status_code == 200
    response = admin.patch(f"/api/v1/users/{other['id']}", json={"roles": []})
    assert response.status_code == 200, response.text
    assert response.json()["roles"] == []


def test_deactivating_and_demoting_another_admin_at_once_is_allowed(admin: httpx.Client) -> None:
    """One PATCH may deactivate and demote a second admin while the caller stays admin."""
    other = _create_user(admin, "leaver-admin@example.com", "admin")
    response = admin.patch(f"/api/v1/users/{other['id']}", json={"active": False, "roles": []})
    assert response.status_code == 200, response.text
    assert response.json()["active"] is False
    assert response.json()["roles"] == []


def test_deactivating_yourself_is_422(admin: httpx.Client) -> None:
    """An admin cannot deactivate their own account; the 422 names body.active."""
    me = _me(admin)
    response = admin.patch(f"/api/v1/users/{me['id']}", json={"active": False})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["message"] == "you cannot deactivate yourself"
    assert error["details"][0]["field"] == "body.active"
    assert _me(admin)["active"] is True


def test_unknown_user_is_404(admin: httpx.Client) -> None:
    """Getting or updating a user id that does not exist is a 404 naming the id."""
    assert admin.get("/api/v1/users/nobody").status_code == 404
    response = admin.patch("/api/v1/users/nobody", json={"display_name": "X"})
    assert response.status_code == 404
    assert response.json()["error"]["target_id"] == "nobody"


# --- tokens -----------------------------------------------------------------------------------


def test_token_is_shown_once_and_never_listed(api: Api, admin: httpx.Client) -> None:
    """POST /me/tokens returns the secret once; listings show metadata only; the secret works."""
    with api.as_role(Role.VIEWER) as viewer:
        created = _new_token(viewer, name="ci")
        user_id = _me(viewer)["id"]
        listed = viewer.get("/api/v1/me/tokens")
    raw = created["token"]
    assert raw.startswith("gft_")
    assert created["prefix"] == raw[:12]
    assert created["name"] == "ci"
    assert created["expires_at"] is not None

    assert listed.status_code == 200
    assert created["id"] in [t["id"] for t in listed.json()]
    assert all("token" not in t for t in listed.json())
    assert raw not in listed.text
    by_admin = admin.get(f"/api/v1/users/{user_id}/tokens")
    assert by_admin.status_code == 200
    assert raw not in by_admin.text

    with api.client(raw) as client:
        assert _me(client)["email"] == "viewer@example.com"


def test_database_holds_no_token_plaintext(api: Api, admin: httpx.Client) -> None:
    """No column of api_tokens contains a token's secret, only its hash and short prefix."""
    mine = _new_token(admin)["token"]
    user = _create_user(admin, "robot@example.com", "operator")
    theirs = admin.post(f"/api/v1/users/{user['id']}/tokens", json={"name": "robot"})
    assert theirs.status_code == 201
    secrets = [mine, theirs.json()["token"]]
    with api.database.transaction() as session:
        rows = session.execute(text("SELECT * FROM api_tokens")).mappings().all()
    assert len(rows) == 3
    stored = json.dumps([dict(row) for row in rows], default=str)
    for raw in secrets:
        assert raw not in stored
        assert raw[12:] not in stored


def test_user_cannot_revoke_another_users_token_but_admin_can(
    api: Api, admin: httpx.Client
) -> None:
    """Revoking someone else's token needs user:admin (403 otherwise); an admin's revoke works."""
    with api.as_role(Role.OPERATOR) as operator:
        target = _new_token(operator)
    with api.as_role(Role.EDITOR) as editor:
        denied = editor.post(f"/api/v1/tokens/{target['id']}/revoke")
    assert denied.status_code == 403
    assert denied.json()["error"]["missing_permission"] == "user:admin"
    with api.client(target["token"]) as client:
        assert client.get("/api/v1/me").status_code == 200

        revoked = admin.post(f"/api/v1/tokens/{target['id']}/revoke")
        assert revoked.status_code == 200
        assert revoked.json()["revoked_at"] is not None
        _assert_unauthenticated(client.get("/api/v1/me"))


def test_revoking_an_unknown_token_is_404(admin: httpx.Client) -> None:
    """Revoking a token id that does not exist is a 404."""
    response = admin.post("/api/v1/tokens/no-such-token/revoke")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_deactivated_user_cannot_get_new_tokens(admin: httpx.Client) -> None:
    """An admin cannot mint a token for a deactivated user (409 saying to reactivate first)."""
    user = _create_user(admin, "gone@example.com", "viewer")
    admin.patch(f"/api/v1/users/{user['id']}", json={"active": False})
    response = admin.post(f"/api/v1/users/{user['id']}/tokens", json={"name": "x"})
    assert response.status_code == 409
    assert response.json()["error"]["next_action"] == "reactivate the user first"


def test_me_lists_the_permissions_of_each_role(api: Api) -> None:
    """GET /me shows the user's roles and exactly the permissions those roles grant."""
    for role in Role:
        with api.as_role(role) as client:
            me = _me(client)
        assert me["email"] == f"{role}@example.com"
        assert me["roles"] == [str(role)]
        assert me["permissions"] == sorted(str(p) for p in ROLE_PERMISSIONS[role])


# --- /me in the CLI's own process ---------------------------------------------------------------


def test_me_in_process_reads_the_acting_user_and_refuses_the_cli_itself(
    api: Api, admin: httpx.Client, settings: Settings
) -> None:
    """Without a token (the local CLI's actor, set in the process): acting as a user, /me is
    that user as stored, with the user's permissions; as `system:cli`, a 403 naming why."""
    user = _create_user(admin, "grace@example.com", "approver")
    app = create_app(settings, api.database, api_only=True)
    acting = Actor(
        label="grace@example.com",
        user_id=user["id"],
        permissions=permissions_for(["approver"]),
    )
    answers = {}
    for name, actor in (("user", acting), ("cli", Actor.system("cli"))):
        local = AsgiTransport(app, actor, lambda: None)
        try:
            answers[name] = local.send("GET", "/api/v1/me", {}, b"")
        finally:
            local.close()
    assert answers["user"].status == 200
    shown = answers["user"].json()
    assert (shown["id"], shown["roles"]) == (user["id"], ["approver"])
    assert shown["email"] == user["email"]
    assert shown["permissions"] == sorted(permissions_for(["approver"]))
    assert answers["cli"].status == 403
    assert "is not a user" in answers["cli"].json()["error"]["message"]
