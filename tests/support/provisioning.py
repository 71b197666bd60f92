"""Applications and connections made through the service layer (as the API and CLI make them),
with credentials encrypted under a test keyring; and the world the shipped examples expect."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from grantflow.access.applications import ApplicationCreate, ApplicationKind, create_application
from grantflow.auth.actor import Actor
from grantflow.connections.crypto import Keyring
from grantflow.connections.schemas import ConnectionCreate
from grantflow.connections.service import create_connection, set_credential
from grantflow.store.database import Database
from tests.support.scim_server import TOKEN as SCIM_TOKEN

ACTOR = Actor.system("test")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# What examples/onboarding.yaml and offboarding.yaml name: one application and its connections.
EXAMPLE_APPLICATION = "Workforce identity"
EXAMPLE_TOKENS = {
    "directory": SCIM_TOKEN,
    "entra": "graph-token-7c2d",
    "okta": "okta-token-91fe",
    "google": "google-token-44ab",
    "mailer": "mailer-token-0d9c",
    "wiki": "wiki-key-58b1",
}


def fresh_keyring() -> Keyring:
    """A master key of its own (the tests' worker gets the same keyring)."""
    key = os.urandom(32)
    return Keyring(lambda: [key])


def make_application(db: Database, name: str, kind: str = "directory") -> str:
    with db.transaction() as session:
        data = ApplicationCreate(name=name, kind=ApplicationKind(kind))
        return create_application(session, ACTOR, data).id


def make_connection(
    db: Database,
    keyring: Keyring | None,
    application_id: str,
    name: str,
    base_url: str,
    *,
    kind: str = "http",
    auth_kind: str = "bearer",
    secret: dict[str, Any] | None = None,
    **fields: Any,
) -> str:
    """A connection; its credential set when `secret` is given."""
    with db.transaction() as session:
        data = ConnectionCreate.model_validate(
            {"name": name, "kind": kind, "base_url": base_url, "auth_kind": auth_kind, **fields}
        )
        connection = create_connection(session, ACTOR, application_id, data)
        if secret is not None:
            assert keyring is not None
            set_credential(session, ACTOR, keyring, connection.id, secret)
        return connection.id


def example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return loaded


def example_connections() -> dict[str, dict[str, Any]]:
    """The examples' connections: kind, auth kind and settings, and credential of each."""
    tokens = EXAMPLE_TOKENS

    def bearer(name: str) -> dict[str, Any]:
        return {"auth_kind": "bearer", "secret": {"token": tokens[name]}}

    def api_key(header: str, key: str) -> dict[str, Any]:
        return {
            "auth_kind": "api_key_header",
            "auth_settings": {"header": header},
            "secret": {"api_key": key},
        }

    return {
        "directory": {"kind": "scim", **bearer("directory")},
        "entra": {"kind": "entra", **bearer("entra")},
        "okta": {"kind": "okta", **api_key("Authorization", f"SSWS {tokens['okta']}")},
        "google": {"kind": "google", **bearer("google")},
        "mailer": {"kind": "http", **bearer("mailer")},
        "wiki": {"kind": "http", **api_key("X-Api-Key", tokens["wiki"])},
    }


def prepare_examples(
    db: Database, keyring: Keyring | None, urls: dict[str, str] | None = None
) -> str:
    """Create the application and connections the examples name; credentials are set when a
    keyring is given. Returns the application's id."""
    application_id = make_application(db, EXAMPLE_APPLICATION)
    for name, spec in example_connections().items():
        secret = spec.pop("secret")
        base_url = (urls or {}).get(name, f"https://{name}.example.com")
        make_connection(
            db, keyring, application_id, name, base_url, secret=secret if keyring else None, **spec
        )
    return application_id
