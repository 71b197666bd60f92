"""Lifecycle end to end: an HR system pushes a new hire over SCIM to /scim/v2, the onboarding
workflow creates the account in a scim2-server target and adds its groups; deactivating the
person over SCIM (the way Entra's provisioning client sends it) offboards them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grantflow.auth.permissions import Role
from grantflow.connections.crypto import Keyring
from grantflow.store.database import Database
from tests.support.connections import API, allowing_loopback, ok, serving_api
from tests.support.engine import publish, running_worker, wait_status
from tests.support.provisioning import make_application, make_connection
from tests.support.scim_server import TOKEN, Tenant

SCIM_JSON = {"Content-Type": "application/scim+json"}
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def onboarding(app_id: str) -> dict[str, Any]:
    def scim(step_id: str, kind: str, nxt: str | None, **config: Any) -> dict[str, Any]:
        step = {"id": step_id, "type": f"scim.{kind}", "config": {"connection": "dir", **config}}
        return {**step, "next": nxt} if nxt else step

    return {
        "name": "Onboard",
        "application": app_id,
        "trigger": {"type": "identity_joined"},
        "steps": [
            scim(
                "create",
                "create_user",
                "team",
                user_name="{{ identity.user_name }}",
                display_name="{{ identity.display_name }}",
                emails=["{{ identity.email }}"],
                external_id="{{ identity.id }}",
            ),
            scim(
                "team",
                "add_to_group",
                "everyone",
                user_id="{{ steps.create.output.user_id }}",
                group="{{ identity.department }}",
            ),
            scim(
                "everyone",
                "add_to_group",
                None,
                user_id="{{ steps.create.output.user_id }}",
                group="Everyone",
            ),
        ],
    }


def test_a_new_hire_pushed_over_scim_is_onboarded_into_the_target(
    database: Database, keyring: Keyring, tenant: Tenant, tmp_path: Path
) -> None:
    app_id = make_application(database, "Directory")
    make_connection(
        database, keyring, app_id, "dir", tenant.url, kind="scim", secret={"token": TOKEN}
    )
    publish(database, onboarding(app_id))
    for name in ("Research", "Everyone"):
        tenant.create("Group", {"displayName": name})
    settings = allowing_loopback(database, tmp_path)
    with serving_api(settings, database) as api, api.as_role(Role.ADMIN) as admin:
        me = ok(admin.get(f"{API}/me"))
        scim_token = ok(
            admin.post(f"{API}/users/{me['id']}/tokens", json={"name": "hr", "scope": "scim"}),
            201,
        )["token"]
        with api.client(scim_token) as hr:
            pushed = hr.post(
                "/scim/v2/Users",
                headers=SCIM_JSON,
                json={
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
                    "userName": "ada.lovelace",
                    "name": {"givenName": "Ada", "familyName": "Lovelace"},
                    "emails": [{"value": "Ada@Example.com", "type": "work", "primary": True}],
                    "active": True,
                    ENTERPRISE: {"department": "Research"},
                },
            )
            assert pushed.status_code == 201, pushed.text
            identity_id = pushed.json()["id"]
            assert hr.get(f"{API}/identities/{identity_id}").status_code == 403

        identity = ok(admin.get(f"{API}/identities/{identity_id}"))
        assert identity["email"] == "ada@example.com"
        assert identity["department"] == "Research"
        assert identity["lifecycle_state"] == "joiner"
        [joined] = ok(admin.get(f"{API}/identities/{identity_id}/events"))
        assert joined["kind"] == "identity_joined"
        run_id = joined["dispatch"][0]["run_id"]
        with running_worker(database, keyring=keyring):
            wait_status(database, run_id, "succeeded")

        [account] = tenant.users(userName="ada.lovelace")
        assert account.external_id == identity_id
        assert account.display_name == "Ada Lovelace"
        assert tenant.members("Research") == {account.id}
        assert tenant.members("Everyone") == {account.id}
        assert ok(admin.get(f"{API}/identities/{identity_id}"))["lifecycle_state"] == "active"

        with api.client(scim_token) as hr:  # Entra sends operation names and booleans as text
            patched = hr.patch(
                f"/scim/v2/Users/{identity_id}",
                headers=SCIM_JSON,
                json={
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "Replace", "path": "active", "value": "False"}],
                },
            )
            assert patched.status_code == 200, patched.text
            assert patched.json()["active"] is False
        events = ok(admin.get(f"{API}/identities/{identity_id}/events"))
        assert [e["kind"] for e in events] == ["identity_joined", "identity_left"]
        assert ok(admin.get(f"{API}/identities/{identity_id}"))["lifecycle_state"] == "left"
