"""The entra.* steps through the real engine against a local Graph that checks request shapes
and answers Graph's documented errors: each maps to a failure class with a next action."""

from __future__ import annotations

from typing import Any

import pytest

from grantflow.connections.crypto import Keyring
from grantflow.store.database import Database
from tests.integration.connectors.conftest import GRAPH_TOKEN
from tests.support.flows import chain, run_to, step
from tests.support.idp.graph import Graph
from tests.support.idp.server import ProviderServer
from tests.support.provisioning import make_connection

SKU = "c7df2760-2c81-4ef7-b578-5b5392b571df"
ADA = {"upn": "ada@contoso.com", "name": "Ada Lovelace"}


@pytest.fixture
def connected(
    database: Database, keyring: Keyring, application_id: str, providers: ProviderServer
) -> str:
    make_connection(
        database,
        keyring,
        application_id,
        "entra",
        providers.url,
        kind="entra",
        secret={"token": GRAPH_TOKEN},
    )
    return application_id


def entra(step_id: str, kind: str, **config: Any) -> dict[str, Any]:
    return step(step_id, f"entra.{kind}", "entra", **config)


CREATE = entra(
    "create",
    "create_user",
    user_principal_name="{{ input.upn }}",
    display_name="{{ input.name }}",
    usage_location="GB",
)


def go(db: Database, keyring: Keyring, app: str, *steps: dict[str, Any], status: str) -> Any:
    return run_to(db, keyring, chain(app, *steps), status, run_input=ADA)


def test_create_user_posts_the_documented_shape(
    database: Database, keyring: Keyring, connected: str, graph: Graph, providers: ProviderServer
) -> None:
    """entra.create_user POSTs /v1.0/users with the required properties and a password that
    appears nowhere in the run; the output is the object id."""
    shown = go(database, keyring, connected, CREATE, status="succeeded")
    (user,) = graph.users.values()
    assert user["userPrincipalName"] == "ada@contoso.com"
    assert (user["mailNickname"], user["accountEnabled"], user["usageLocation"]) == (
        "ada",
        True,
        "GB",
    )
    assert shown["steps"][0]["output"]["user_id"] == user["id"]
    (sent,) = providers.calls("POST", "/v1.0/users")
    password = sent.body["passwordProfile"]["password"]
    assert sent.body["passwordProfile"]["forceChangePasswordNextSignIn"] is True
    assert password not in repr(shown)
    assert sent.headers["idempotency-key"].endswith(":create:1-1")


def test_duplicate_user_principal_name_is_already_exists(
    database: Database, keyring: Keyring, connected: str, graph: Graph
) -> None:
    """Graph's ObjectConflict on userPrincipalName fails permanently as already exists."""
    graph.users["x"] = {"id": "x", "userPrincipalName": "ada@contoso.com"}
    shown = go(database, keyring, connected, CREATE, status="failed")
    failure = shown["failure"]
    assert (failure["class"], failure["code"]) == ("permanent", "already_exists")
    assert "user 'ada@contoso.com' already exists in Microsoft Entra ID" in failure["message"]
    assert failure["attempts"] == 1


def test_group_membership_and_repeated_add(
    database: Database, keyring: Keyring, connected: str, graph: Graph
) -> None:
    """entra.add_group_member posts an @odata.id reference; adding a member twice succeeds."""
    group = graph.add_group()
    join = entra(
        "join", "add_group_member", group_id=group, user_id="{{ steps.create.output.user_id }}"
    )
    again = {**join, "id": "again"}
    shown = go(database, keyring, connected, CREATE, join, again, status="succeeded")
    user_id = shown["steps"][0]["output"]["user_id"]
    assert graph.groups[group] == {user_id}
    assert shown["steps"][1]["output"]["added"] is True
    assert shown["steps"][2]["output"]["added"] is False


def test_missing_group_is_not_found_naming_it(
    database: Database, keyring: Keyring, connected: str
) -> None:
    """A group id Graph does not know fails permanently, naming the group."""
    join = entra(
        "join", "add_group_member", group_id="g-404", user_id="{{ steps.create.output.user_id }}"
    )
    shown = go(database, keyring, connected, CREATE, join, status="failed")
    failure = shown["failure"]
    assert (failure["class"], failure["code"], failure["step_id"]) == (
        "permanent",
        "not_found",
        "join",
    )
    assert "group 'g-404'" in failure["message"]


def test_assign_license_uses_a_seat(
    database: Database, keyring: Keyring, connected: str, graph: Graph, providers: ProviderServer
) -> None:
    """entra.assign_license sends addLicenses and removeLicenses; a seat is used."""
    graph.seats[SKU] = 3
    assign = entra(
        "licence", "assign_license", user_id="{{ steps.create.output.user_id }}", sku_id=SKU
    )
    go(database, keyring, connected, CREATE, assign, status="succeeded")
    assert graph.seats[SKU] == 2
    (sent,) = [r for r in providers.requests if r.path.endswith("/assignLicense")]
    assert sent.body == {"addLicenses": [{"skuId": SKU, "disabledPlans": []}], "removeLicenses": []}


def test_no_available_licenses_says_to_free_or_buy_seats(
    database: Database, keyring: Keyring, connected: str, graph: Graph
) -> None:
    """Graph's licence error becomes 'No available licenses for SKU X: free or buy seats,
    then Retry', permanent (never retried)."""
    graph.seats[SKU] = 0
    assign = {
        **entra("licence", "assign_license", user_id="{{ input.upn }}", sku_id=SKU),
        "retry": {"max_attempts": 3},
    }
    graph.users["u"] = {
        "id": "u",
        "userPrincipalName": "ada@contoso.com",
        "usageLocation": "GB",
        "assignedLicenses": [],
    }
    shown = go(database, keyring, connected, assign, status="failed")
    failure = shown["failure"]
    assert failure["message"] == (
        f"No available licenses for SKU {SKU}: free or buy seats, then Retry"
    )
    assert (failure["class"], failure["code"], failure["attempts"]) == (
        "permanent",
        "no_licenses",
        1,
    )
    assert "free seats" in failure["next_action"]


def test_disable_account_and_revoke_sessions(
    database: Database, keyring: Keyring, connected: str, graph: Graph
) -> None:
    """entra.disable_account PATCHes accountEnabled=false; entra.revoke_sessions revokes."""
    graph.users["u"] = {"id": "u", "userPrincipalName": "ada@contoso.com", "accountEnabled": True}
    disable = entra("disable", "disable_account", user_id="{{ input.upn }}")
    revoke = entra("revoke", "revoke_sessions", user_id="{{ input.upn }}")
    go(database, keyring, connected, disable, revoke, status="succeeded")
    assert graph.users["u"]["accountEnabled"] is False
    assert graph.revoked == ["u"]


def test_insufficient_privileges_names_the_graph_permission(
    database: Database, keyring: Keyring, connected: str, graph: Graph
) -> None:
    """Authorization_RequestDenied (403) fails permanently with the permission to grant."""
    graph.read_only = True
    shown = go(database, keyring, connected, CREATE, status="failed")
    failure = shown["failure"]
    assert (failure["class"], failure["status_code"]) == ("permanent", 403)
    assert "Insufficient privileges" in failure["message"]
    assert "User.ReadWrite.All" in failure["next_action"]


def test_throttling_is_transient_and_retried(
    database: Database, keyring: Keyring, connected: str, graph: Graph
) -> None:
    """A 429 TooManyRequests is retried (honouring Retry-After); the step then succeeds."""
    graph.throttle = 1
    retried = {**CREATE, "retry": {"max_attempts": 2, "initial_backoff": "PT0.05S"}}
    shown = go(database, keyring, connected, retried, status="succeeded")
    log = shown["steps"][0]["attempt_log"]
    assert [a["status"] for a in log] == ["failed", "succeeded"]
    assert log[0]["error"]["class"] == "transient"
    assert "throttling" in log[0]["error"]["message"]


def test_wrong_token_fails_with_the_credential_next_action(
    database: Database, keyring: Keyring, application_id: str, providers: ProviderServer
) -> None:
    """InvalidAuthenticationToken (401) says to replace the credential; the token is hidden."""
    make_connection(
        database,
        keyring,
        application_id,
        "entra",
        providers.url,
        kind="entra",
        secret={"token": "stale-token-6f2e"},
    )
    shown = go(database, keyring, application_id, CREATE, status="failed")
    failure = shown["failure"]
    assert (failure["class"], failure["status_code"]) == ("permanent", 401)
    assert "replace it" in failure["next_action"]
    assert "stale-token-6f2e" not in repr(shown)
