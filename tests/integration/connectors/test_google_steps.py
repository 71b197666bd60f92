"""The google.* steps through the real engine against a local Directory API that checks
request shapes and answers Google's documented error bodies."""

from __future__ import annotations

from typing import Any

import pytest

from grantflow.connections.crypto import Keyring
from grantflow.store.database import Database
from tests.integration.connectors.conftest import GOOGLE_TOKEN
from tests.support.flows import chain, run_to, step
from tests.support.idp.google import Google
from tests.support.idp.server import ProviderServer
from tests.support.provisioning import make_connection

LIN = {"email": "lin@example.com", "given": "Lin", "family": "Chen"}


@pytest.fixture
def connected(
    database: Database, keyring: Keyring, application_id: str, providers: ProviderServer
) -> str:
    make_connection(
        database,
        keyring,
        application_id,
        "google",
        providers.url,
        kind="google",
        secret={"token": GOOGLE_TOKEN},
    )
    return application_id


def google_step(step_id: str, kind: str, **config: Any) -> dict[str, Any]:
    return step(step_id, f"google.{kind}", "google", **config)


INSERT = google_step(
    "insert",
    "insert_user",
    primary_email="{{ input.email }}",
    given_name="{{ input.given }}",
    family_name="{{ input.family }}",
)


def go(db: Database, keyring: Keyring, app: str, *steps: dict[str, Any], status: str) -> Any:
    return run_to(db, keyring, chain(app, *steps), status, run_input=LIN)


def test_insert_user_and_add_to_group(
    database: Database, keyring: Keyring, connected: str, google: Google, providers: ProviderServer
) -> None:
    """google.insert_user sends primaryEmail, name and a password nobody sees;
    google.add_group_member adds by email, and a second add is already done."""
    google.groups["staff@example.com"] = {}
    join = google_step(
        "join", "add_group_member", group_key="staff@example.com", email="{{ input.email }}"
    )
    again = {**join, "id": "again"}
    shown = go(database, keyring, connected, INSERT, join, again, status="succeeded")
    (user,) = google.users.values()
    assert (user["primaryEmail"], user["name"]) == (
        "lin@example.com",
        {"givenName": "Lin", "familyName": "Chen"},
    )
    assert shown["steps"][0]["output"]["user_id"] == user["id"]
    assert google.groups["staff@example.com"] == {"lin@example.com": "MEMBER"}
    assert [s["output"]["added"] for s in shown["steps"][1:]] == [True, False]
    (sent,) = providers.calls("POST", "/admin/directory/v1/users")
    assert sent.body["changePasswordAtNextLogin"] is True
    assert sent.body["password"] not in repr(shown)


def test_existing_user_is_already_exists(
    database: Database, keyring: Keyring, connected: str, google: Google
) -> None:
    """409 'Entity already exists.' is a permanent already exists naming the address."""
    google.users["1"] = {"id": "1", "primaryEmail": "lin@example.com"}
    shown = go(database, keyring, connected, INSERT, status="failed")
    failure = shown["failure"]
    assert (failure["class"], failure["code"], failure["status_code"]) == (
        "permanent",
        "already_exists",
        409,
    )
    assert "user 'lin@example.com' already exists in Google Workspace" in failure["message"]


def test_unknown_group_is_not_found(database: Database, keyring: Keyring, connected: str) -> None:
    """404 'Resource Not Found: groupKey' is a permanent not_found naming the group."""
    join = google_step(
        "join", "add_group_member", group_key="ghosts@example.com", email="{{ input.email }}"
    )
    shown = go(database, keyring, connected, join, status="failed")
    failure = shown["failure"]
    assert (failure["class"], failure["code"]) == ("permanent", "not_found")
    assert "group 'ghosts@example.com'" in failure["message"]


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_suspend_user(
    database: Database,
    keyring: Keyring,
    connected: str,
    google: Google,
    providers: ProviderServer,
    method: str,
) -> None:
    """google.suspend_user sets suspended=true on users/{userKey}, by PUT or PATCH."""
    google.users["1"] = {"id": "1", "primaryEmail": "lin@example.com", "suspended": False}
    off = google_step("off", "suspend_user", user_key="{{ input.email }}", method=method)
    go(database, keyring, connected, off, status="succeeded")
    assert google.users["1"]["suspended"] is True
    assert providers.calls(method, "/admin/directory/v1/users/lin@example.com")


def test_user_rate_limit_403_is_transient(
    database: Database, keyring: Keyring, connected: str, google: Google
) -> None:
    """Google's 403 userRateLimitExceeded is throttling, retried like a 429."""
    google.rate_limited = 1
    retried = {**INSERT, "retry": {"max_attempts": 2, "initial_backoff": "PT0.05S"}}
    shown = go(database, keyring, connected, retried, status="succeeded")
    first = shown["steps"][0]["attempt_log"][0]["error"]
    assert (first["class"], first["code"]) == ("transient", "throttled")
