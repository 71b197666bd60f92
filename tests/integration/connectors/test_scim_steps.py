"""The scim.* steps through the real engine against a real scim2-server process: accounts and
memberships end up in the server, failures carry the right class, message and next action."""

from __future__ import annotations

from typing import Any

import pytest

from grantflow.connections.crypto import Keyring
from grantflow.connections.outbound import OutboundPolicy
from grantflow.steps import scim_session
from grantflow.store.database import Database
from tests.support.flows import chain, run_to, step
from tests.support.oauth import running_oauth_server
from tests.support.provisioning import make_connection
from tests.support.scim_server import TOKEN, Tenant, token_gateway
from tests.support.services import free_port
from tests.support.target import Reply, running_target

ADA = {"email": "ada@example.com", "name": "Ada Lovelace", "id": "emp-1815"}


def connect(
    db: Database, keyring: Keyring, application_id: str, url: str, token: str = TOKEN
) -> None:
    make_connection(
        db, keyring, application_id, "directory", url, kind="scim", secret={"token": token}
    )


def document(application_id: str, *steps: dict[str, Any]) -> dict[str, Any]:
    return chain(application_id, *steps, name="SCIM provisioning")


def scim(step_id: str, kind: str, **config: Any) -> dict[str, Any]:
    return step(step_id, f"scim.{kind}", "directory", **config)


CREATE = scim(
    "create",
    "create_user",
    user_name="{{ input.email }}",
    display_name="{{ input.name }}",
    emails=["{{ input.email }}"],
    external_id="{{ input.id }}",
)


def run(
    db: Database, keyring: Keyring, doc: dict[str, Any], *statuses: str, **worker: Any
) -> dict[str, Any]:
    return run_to(db, keyring, doc, *statuses, run_input=ADA, **worker)


def test_create_user_provisions_the_account_and_outputs_its_id(
    database: Database, keyring: Keyring, application_id: str, tenant: Tenant
) -> None:
    """scim.create_user creates the user with its attributes; the output carries the id."""
    connect(database, keyring, application_id, tenant.url)
    shown = run(database, keyring, document(application_id, CREATE), "succeeded")
    (user,) = tenant.users(userName="ada@example.com")
    assert user.display_name == "Ada Lovelace"
    assert user.external_id == "emp-1815"
    assert [e.value for e in user.emails] == ["ada@example.com"]
    assert user.active is True
    output = shown["steps"][0]["output"]
    assert output["user_id"] == user.id
    assert (output["created"], output["adopted"]) == (True, False)
    attempt = shown["steps"][0]["attempt_log"][0]
    assert [(x["method"], x["status_code"]) for x in attempt["response"]["exchanges"]][-1] == (
        "POST",
        201,
    )
    assert TOKEN not in repr(shown)


def test_a_scim_step_on_an_http_connection_fails_naming_the_kind(
    database: Database, keyring: Keyring, application_id: str, tenant: Tenant
) -> None:
    """A SCIM step pointed at a connection of another kind fails before any call."""
    make_connection(
        database, keyring, application_id, "directory", tenant.url, secret={"token": TOKEN}
    )
    shown = run(database, keyring, document(application_id, CREATE), "failed")
    assert shown["failure"]["class"] == "configuration"
    assert (
        "is a http connection; SCIM steps need a scim connection" in (shown["failure"]["message"])
    )
    assert tenant.users(userName="ada@example.com") == []


def test_existing_account_fails_permanently_naming_the_email(
    database: Database, keyring: Keyring, application_id: str, tenant: Tenant
) -> None:
    """An account with the same email (other userName) fails the run: permanent, names it."""
    tenant.create("User", {"userName": "ada.l", "emails": [{"value": "ada@example.com"}]})
    connect(database, keyring, application_id, tenant.url)
    shown = run(database, keyring, document(application_id, CREATE), "failed")
    failure = shown["failure"]
    assert (failure["class"], failure["code"], failure["step_id"]) == (
        "permanent",
        "already_exists",
        "create",
    )
    assert "'ada@example.com' already exists" in failure["message"]
    assert "if_exists: adopt" in failure["next_action"]
    assert len(tenant.users()) == 1


def test_if_exists_adopt_uses_the_existing_account(
    database: Database, keyring: Keyring, application_id: str, tenant: Tenant
) -> None:
    """With if_exists: adopt, the existing account's id becomes the output; nothing is made."""
    existing = tenant.create("User", {"userName": "ada@example.com"})
    connect(database, keyring, application_id, tenant.url)
    adopt = {**CREATE, "config": {**CREATE["config"], "if_exists": "adopt"}}
    shown = run(database, keyring, document(application_id, adopt), "succeeded")
    output = shown["steps"][0]["output"]
    assert output["user_id"] == existing.id
    assert (output["created"], output["adopted"]) == (False, True)
    assert len(tenant.users()) == 1


def test_missing_group_fails_permanently_naming_it(
    database: Database, keyring: Keyring, application_id: str, tenant: Tenant
) -> None:
    """Adding to a group the target does not have fails: permanent, group_missing, named."""
    connect(database, keyring, application_id, tenant.url)
    join = scim("join", "add_to_group", group="Ghosts", user_id="{{ steps.create.output.id }}")
    shown = run(database, keyring, document(application_id, CREATE, join), "failed")
    failure = shown["failure"]
    assert (failure["class"], failure["code"], failure["step_id"]) == (
        "permanent",
        "group_missing",
        "join",
    )
    assert "group 'Ghosts' does not exist in connection 'directory'" in failure["message"]
    assert "create group 'Ghosts'" in failure["next_action"]


def test_add_to_group_then_remove_from_group(
    database: Database, keyring: Keyring, application_id: str, tenant: Tenant
) -> None:
    """A created user is added to a group by name, and removed again by userName."""
    group = tenant.create("Group", {"displayName": "Research"})
    connect(database, keyring, application_id, tenant.url)
    join = scim("join", "add_to_group", group="Research", user_id="{{ steps.create.output.id }}")
    shown = run(database, keyring, document(application_id, CREATE, join), "succeeded")
    user_id = shown["steps"][0]["output"]["user_id"]
    assert tenant.members("Research") == {user_id}
    assert shown["steps"][1]["output"] == {"group_id": group.id, "user_id": user_id, "member": True}

    leave = scim("leave", "remove_from_group", group_id=group.id, user_name="{{ input.email }}")
    removal = {**document(application_id, leave), "name": "Leave"}
    run(database, keyring, removal, "succeeded")
    assert tenant.members("Research") == set()


@pytest.mark.parametrize("method", ["patch", "put"])
def test_deactivate_user_sets_active_false(
    database: Database, keyring: Keyring, application_id: str, tenant: Tenant, method: str
) -> None:
    """scim.deactivate_user leaves the account in place with active=false (PATCH or PUT)."""
    tenant.create("User", {"userName": "ada@example.com", "displayName": "Ada", "active": True})
    connect(database, keyring, application_id, tenant.url)
    off = scim("off", "deactivate_user", user_name="{{ input.email }}", method=method)
    shown = run(database, keyring, document(application_id, off), "succeeded")
    (user,) = tenant.users(userName="ada@example.com")
    assert user.active is False
    assert user.display_name == "Ada"
    exchanges = shown["steps"][0]["attempt_log"][0]["response"]["exchanges"]
    assert exchanges[-1]["method"] == method.upper()


def test_delete_user_removes_the_account(
    database: Database, keyring: Keyring, application_id: str, tenant: Tenant
) -> None:
    """scim.delete_user removes the account; deleting again with if_missing: succeed is a no-op."""
    tenant.create("User", {"userName": "ada@example.com"})
    tenant.create("User", {"userName": "grace@example.com"})
    connect(database, keyring, application_id, tenant.url)
    delete = scim("delete", "delete_user", user_name="{{ input.email }}")
    shown = run(database, keyring, document(application_id, delete), "succeeded")
    assert shown["steps"][0]["output"]["deleted"] is True
    assert [u.user_name for u in tenant.users()] == ["grace@example.com"]

    again = scim("delete", "delete_user", user_name="{{ input.email }}", if_missing="succeed")
    shown = run(
        database, keyring, {**document(application_id, again), "name": "Again"}, "succeeded"
    )
    assert shown["steps"][0]["output"] == {"user_id": None, "deleted": False}


def test_update_user_changes_attributes(
    database: Database, keyring: Keyring, application_id: str, tenant: Tenant
) -> None:
    """scim.update_user changes the attributes it names and keeps the others."""
    tenant.create("User", {"userName": "ada@example.com", "displayName": "Ada", "title": "Eng"})
    connect(database, keyring, application_id, tenant.url)
    change = scim(
        "change", "update_user", user_name="{{ input.email }}", display_name="{{ input.name }}"
    )
    run(database, keyring, document(application_id, change), "succeeded")
    (user,) = tenant.users(userName="ada@example.com")
    assert (user.display_name, user.title) == ("Ada Lovelace", "Eng")


def test_find_user_changes_nothing_and_outputs_the_id(
    database: Database, keyring: Keyring, application_id: str, tenant: Tenant
) -> None:
    """scim.find_user is a lookup (no side effects) whose output is the user's id."""
    existing = tenant.create("User", {"userName": "ada@example.com"})
    connect(database, keyring, application_id, tenant.url)
    find = scim("find", "find_user", user_name="{{ input.email }}")
    shown = run(database, keyring, document(application_id, find), "succeeded")
    step = shown["steps"][0]
    assert step["side_effects"] is False
    assert (step["output"]["found"], step["output"]["user_id"]) == (True, existing.id)


def test_wrong_token_fails_with_the_credential_next_action(
    database: Database, keyring: Keyring, application_id: str, tenant: Tenant
) -> None:
    """A 401 from the SCIM server fails permanently, says to replace the credential, and never
    shows the token."""
    connect(database, keyring, application_id, tenant.url, token="wrong-token-8a7b")
    shown = run(database, keyring, document(application_id, CREATE), "failed")
    failure = shown["failure"]
    assert (failure["class"], failure["code"], failure["status_code"]) == (
        "permanent",
        "unauthorized",
        401,
    )
    assert "refused the credential" in failure["message"]
    assert "replace it" in failure["next_action"]
    assert "wrong-token-8a7b" not in repr(shown)


def test_unreachable_server_is_transient_and_retried(
    database: Database, keyring: Keyring, application_id: str
) -> None:
    """Nothing listening: each attempt is a transient failure; the run fails once they are
    used up, saying to check the target."""
    connect(database, keyring, application_id, f"http://127.0.0.1:{free_port()}/v2")
    retry = {"max_attempts": 2, "initial_backoff": "PT0.05S", "jitter": "none"}
    shown = run(database, keyring, document(application_id, {**CREATE, "retry": retry}), "failed")
    failure = shown["failure"]
    assert failure["class"] == "transient"
    assert "could not reach 127.0.0.1" in failure["message"]
    assert "used all its attempts" in failure["next_action"]
    assert shown["steps"][0]["attempts"] == 2


def test_loopback_is_refused_without_the_allowlist(
    database: Database, keyring: Keyring, application_id: str, tenant: Tenant
) -> None:
    """The SCIM client goes through the outbound guard: a worker that does not allowlist
    127.0.0.1 refuses to connect, naming the rule."""
    connect(database, keyring, application_id, tenant.url)
    shown = run(
        database,
        keyring,
        document(application_id, CREATE),
        "failed",
        outbound=OutboundPolicy.parse([]),
    )
    assert shown["failure"]["class"] == "safety"
    assert "127.0.0.1 is a loopback address" in shown["failure"]["message"]
    assert tenant.users() == []


def test_step_timeout_bounds_the_scim_calls(
    database: Database, keyring: Keyring, application_id: str
) -> None:
    """A SCIM server that does not answer within the step's timeout times the run out; the
    request carried the connection's auth and the step's idempotency key."""
    with running_target() as target:
        target.on("/v2/ResourceTypes", Reply(200, {"Resources": []}, delay=3))
        connect(database, keyring, application_id, f"{target.url}/v2")
        slow = {**CREATE, "timeout": "PT0.5S"}
        shown = run(database, keyring, document(application_id, slow), "timed_out")
    assert shown["failure"]["class"] == "timeout"
    assert "did not finish within the step's timeout" in shown["failure"]["message"]
    (sent,) = target.calls("/v2/ResourceTypes")
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.idempotency_key == f"{shown['id']}:create:1-1"


def test_discovery_happens_once_per_connection(
    database: Database, keyring: Keyring, application_id: str, tenant: Tenant
) -> None:
    """Several SCIM steps (and runs) on one connection discover the server once."""
    tenant.create("Group", {"displayName": "Research"})
    connect(database, keyring, application_id, tenant.url)
    join = scim("join", "add_to_group", group="Research", user_id="{{ steps.create.output.id }}")
    find = scim("find", "find_user", user_name="{{ input.email }}")
    before = scim_session.DISCOVERIES._value.get()
    run(database, keyring, document(application_id, CREATE, join, find), "succeeded")
    assert scim_session.DISCOVERIES._value.get() == before + 1


def test_refused_oauth_token_is_refreshed_once_and_the_call_repeated(
    database: Database, keyring: Keyring, application_id: str, tenant: Tenant
) -> None:
    """On an OAuth connection a SCIM 401 gets one fresh token and the call again: the run
    succeeds, one extra token is fetched, one request was refused."""
    refused: list[str] = []
    with running_oauth_server() as oauth:
        client = oauth.register_client()

        def accepts(token: str) -> bool:
            record = oauth.access.get(token)
            if record is None or not record.valid():
                refused.append(token)
                return False
            return True

        with token_gateway(tenant, accepts) as url:
            make_connection(
                database,
                keyring,
                application_id,
                "directory",
                url,
                kind="scim",
                auth_kind="oauth_client_credentials",
                auth_settings={"token_url": oauth.token_url},
                secret={"client_id": client.client_id, "client_secret": client.client_secret},
            )
            find = scim("find", "find_user", user_name="{{ input.email }}", if_missing="succeed")
            run(database, keyring, document(application_id, find), "succeeded")
            assert len(oauth.grants(200)) == 1
            oauth.revoke_access()
            shown = run(database, keyring, document(application_id, find), "succeeded")
    assert len(oauth.grants(200)) == 2
    assert len(refused) == 1
    assert shown["steps"][0]["output"] == {"found": False, "user_id": None}
    assert client.client_secret not in repr(shown)


def test_the_connections_rate_limit_paces_every_scim_request(
    database: Database, keyring: Keyring, application_id: str, tenant: Tenant
) -> None:
    """Each SCIM request (discovery, lookups, the create) waits for the connection's token
    bucket: six requests at 4/s with a burst of 1 take at least 1.25 s."""
    make_connection(
        database,
        keyring,
        application_id,
        "directory",
        tenant.url,
        kind="scim",
        secret={"token": TOKEN},
        rate_limit_per_second=4,
        rate_limit_burst=1,
    )
    shown = run(database, keyring, document(application_id, CREATE), "succeeded")
    attempt = shown["steps"][0]["attempt_log"][0]
    assert len(attempt["response"]["exchanges"]) == 6
    assert attempt["duration_ms"] >= 1250
