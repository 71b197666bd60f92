"""The okta.* steps through the real engine against a local Okta that checks request shapes
(SSWS token, profile fields) and answers Okta's documented errorCode bodies."""

from __future__ import annotations

from typing import Any

import pytest

from grantflow.connections.crypto import Keyring
from grantflow.store.database import Database
from tests.integration.connectors.conftest import OKTA_TOKEN
from tests.support.flows import chain, run_to, step
from tests.support.idp.okta import Okta
from tests.support.idp.server import ProviderServer
from tests.support.provisioning import make_connection

GRACE = {"login": "grace@example.com", "first": "Grace", "last": "Hopper"}


@pytest.fixture
def connected(
    database: Database, keyring: Keyring, application_id: str, providers: ProviderServer
) -> str:
    make_connection(
        database,
        keyring,
        application_id,
        "okta",
        providers.url,
        kind="okta",
        auth_kind="api_key_header",
        auth_settings={"header": "Authorization"},
        secret={"api_key": f"SSWS {OKTA_TOKEN}"},
    )
    return application_id


def okta_step(step_id: str, kind: str, **config: Any) -> dict[str, Any]:
    return step(step_id, f"okta.{kind}", "okta", **config)


CREATE = okta_step(
    "create",
    "create_user",
    login="{{ input.login }}",
    email="{{ input.login }}",
    first_name="{{ input.first }}",
    last_name="{{ input.last }}",
)


def go(db: Database, keyring: Keyring, app: str, *steps: dict[str, Any], status: str) -> Any:
    return run_to(db, keyring, chain(app, *steps), status, run_input=GRACE)


def test_create_user_activates_and_adds_to_group(
    database: Database, keyring: Keyring, connected: str, okta: Okta, providers: ProviderServer
) -> None:
    """okta.create_user POSTs ?activate=true with the profile; okta.add_to_group PUTs the
    membership; the output carries the Okta id."""
    group = okta.add_group()
    join = okta_step(
        "join", "add_to_group", group_id=group, user_id="{{ steps.create.output.user_id }}"
    )
    shown = go(database, keyring, connected, CREATE, join, status="succeeded")
    (user,) = okta.users.values()
    assert user["status"] == "ACTIVE"
    assert user["profile"] == {
        "firstName": "Grace",
        "lastName": "Hopper",
        "email": "grace@example.com",
        "login": "grace@example.com",
    }
    assert okta.groups[group] == {user["id"]}
    assert shown["steps"][0]["output"]["user_id"] == user["id"]
    (sent,) = providers.calls("POST", "/api/v1/users")
    assert sent.param("activate") == "true"


def test_existing_login_is_already_exists(
    database: Database, keyring: Keyring, connected: str, okta: Okta
) -> None:
    """E0000001 'login: An object with this field already exists' is a permanent already
    exists, naming the login."""
    okta.users["00u1"] = {
        "id": "00u1",
        "status": "ACTIVE",
        "profile": {"login": "grace@example.com"},
    }
    shown = go(database, keyring, connected, CREATE, status="failed")
    failure = shown["failure"]
    assert (failure["class"], failure["code"]) == ("permanent", "already_exists")
    assert "user 'grace@example.com' already exists in Okta" in failure["message"]
    assert "E0000001" in failure["message"]


def test_unknown_group_is_not_found(database: Database, keyring: Keyring, connected: str) -> None:
    """E0000007 for a group that does not exist is a permanent not_found naming it."""
    join = okta_step(
        "join", "add_to_group", group_id="00gmissing", user_id="{{ steps.create.output.user_id }}"
    )
    shown = go(database, keyring, connected, CREATE, join, status="failed")
    failure = shown["failure"]
    assert (failure["class"], failure["code"], failure["step_id"]) == (
        "permanent",
        "not_found",
        "join",
    )
    assert "00gmissing" in failure["message"]


def test_deactivate_user_by_login(
    database: Database, keyring: Keyring, connected: str, okta: Okta
) -> None:
    """okta.deactivate_user POSTs the lifecycle call; the user ends DEPROVISIONED."""
    okta.users["00u1"] = {
        "id": "00u1",
        "status": "ACTIVE",
        "profile": {"login": "grace@example.com"},
    }
    off = okta_step("off", "deactivate_user", user_id="{{ input.login }}")
    go(database, keyring, connected, off, status="succeeded")
    assert okta.users["00u1"]["status"] == "DEPROVISIONED"


def test_rate_limit_is_transient_and_retried(
    database: Database, keyring: Keyring, connected: str, okta: Okta
) -> None:
    """E0000047 (429) is retried; the step then succeeds."""
    okta.rate_limited = 1
    retried = {**CREATE, "retry": {"max_attempts": 2, "initial_backoff": "PT0.05S"}}
    shown = go(database, keyring, connected, retried, status="succeeded")
    errors = [a["error"] for a in shown["steps"][0]["attempt_log"]]
    assert errors[0]["class"] == "transient"
    assert "E0000047" in errors[0]["message"]


def test_invalid_token_fails_with_the_credential_next_action(
    database: Database, keyring: Keyring, application_id: str, providers: ProviderServer
) -> None:
    """E0000011 (401) fails permanently, says to replace the credential, hides the token."""
    make_connection(
        database,
        keyring,
        application_id,
        "okta",
        providers.url,
        kind="okta",
        auth_kind="api_key_header",
        auth_settings={"header": "Authorization"},
        secret={"api_key": "SSWS revoked-token-0e4f"},
    )
    shown = go(database, keyring, application_id, CREATE, status="failed")
    failure = shown["failure"]
    assert (failure["class"], failure["status_code"]) == ("permanent", 401)
    assert "E0000011" in failure["message"]
    assert "replace it" in failure["next_action"]
    assert "revoked-token-0e4f" not in repr(shown)
