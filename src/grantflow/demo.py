"""The demo workspace `make run` starts with: a working sandbox.

- an admin and an approver (Grace, the manager of the new hire), each with an API token printed
  once;
- the application "Workforce identity" with the connections the shipped examples name, pointing
  at the sandbox targets (`grantflow serve --sandbox`) and holding the sandbox credential;
- the examples (`grantflow/examples/*.yaml`, linked as `examples/` in a checkout) published;
- people who were there before (no runs), and one new hire, Katherine Johnson, whose onboarding
  run waits for Grace's approval — approve it and watch it provision the sandbox;
- the application "Demo Wiki", with a connection to the sandbox's wiki but no workflow, and a
  grant whose chip says why no workflow ran for it (the tutorial writes that workflow).

Created once: a second `grantflow demo` finds the admin and changes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from grantflow.access.applications import ApplicationCreate, ApplicationKind, create_application
from grantflow.access.grants import GrantCreate, create_grant
from grantflow.access.identities import IdentityCreate, create_identity
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Role
from grantflow.auth.tokens import create_token
from grantflow.auth.users import create_user, find_user_by_email
from grantflow.config import Settings, master_key
from grantflow.connections.crypto import keyring_for
from grantflow.connections.schemas import ConnectionCreate
from grantflow.connections.service import create_connection, set_credential
from grantflow.definitions.workflows import apply_document
from grantflow.engine.models import Run
from grantflow.errors import ConfigurationError
from grantflow.queue.interface import Queue
from grantflow.sandbox import saas_url, sandbox_token, scim_url

DEMO_ADMIN = "admin@demo.grantflow.dev"
DEMO_APPROVER = "grace@demo.grantflow.dev"  # a Grantflow user, and the identity of a manager
NEW_HIRE = "katherine@demo.grantflow.dev"
WORKFORCE = "Workforce identity"  # the application the examples name
EXAMPLES = Path(__file__).resolve().parent / "examples"  # shipped in the package
ONBOARDING = "onboarding.yaml"

DEMO_WIKI = ApplicationCreate(
    name="Demo Wiki",
    description="A demo SaaS wiki (its members API is in the sandbox) with no workflow yet: "
    "its grant shows why no run started.",
    kind=ApplicationKind.SAAS,
    homepage_url="https://wiki.example.com/",
    labels={"demo": "true"},
)
# already there before the workflows were published: no runs
DEMO_STAFF = [
    IdentityCreate(
        email="grace@demo.grantflow.dev",
        display_name="Grace Hopper",
        title="Head of Research",
        department="Research",
    ),
    IdentityCreate(
        email="ada@demo.grantflow.dev",
        display_name="Ada Lovelace",
        title="Analyst",
        department="Research",
        manager="grace@demo.grantflow.dev",
    ),
    IdentityCreate(
        email="alan@demo.grantflow.dev",
        display_name="Alan Turing",
        title="Engineer",
        department="Engineering",
        manager="grace@demo.grantflow.dev",
        attributes={"employment_type": "contractor"},
    ),
]
DEMO_NEW_HIRE = IdentityCreate(
    email=NEW_HIRE,
    display_name="Katherine Johnson",
    title="Mathematician",
    department="Research",
    manager="grace@demo.grantflow.dev",
)


@dataclass(frozen=True)
class DemoWorkspace:
    created: bool
    admin_email: str
    token: str | None  # only when just created: it is never shown again
    approver_email: str
    approver_token: str | None
    onboarding_run_id: str | None

    def summary(self, url: str) -> list[str]:
        """What `grantflow demo` prints: the tokens (once), then how to approve and watch."""
        approver = self.approver_email
        if self.created:
            lines = [
                "Demo workspace created. Tokens are shown once: store them now.",
                f"  admin     {self.admin_email}  {self.token}",
                f"  approver  {approver}  {self.approver_token}",
                "Katherine Johnson has joined: her onboarding run waits for her manager "
                f"{approver} to approve it (run {self.onboarding_run_id}).",
            ]
        else:
            lines = [
                f"Demo workspace already exists (admin {self.admin_email}); tokens were printed "
                f"when it was created. A new one: grantflow tokens create --user {approver}"
            ]
        return [
            *lines,
            f"Grantflow will listen on {url}  (API docs: {url}/api/v1/docs)",
            f"Approve:  grantflow inbox list --as {approver}",
            f"          grantflow inbox approve TASK_ID --as {approver}",
            'Watch:    grantflow runs list --workflow "Onboard new hire"',
        ]


def _connections(settings: Settings) -> dict[str, dict[str, Any]]:
    """The examples' connections, every one at a sandbox target."""
    api = saas_url(settings)
    bearer = {"auth_kind": "bearer"}
    return {
        "directory": {
            "kind": "scim",
            "base_url": scim_url(settings),
            "health_check": {"path": "/ResourceTypes"},  # (ServiceProviderConfig is public)
            **bearer,
        },
        "entra": {"kind": "entra", "base_url": api, **bearer},
        "okta": {
            "kind": "okta",
            "base_url": api,
            "auth_kind": "api_key_header",
            "auth_settings": {"header": "Authorization"},
        },
        "google": {"kind": "google", "base_url": api, **bearer},
        "mailer": {"kind": "http", "base_url": api, **bearer},
        "wiki": {
            "kind": "http",
            "base_url": api,
            "auth_kind": "api_key_header",
            "auth_settings": {"header": "X-Api-Key"},
        },
    }


def _secret(spec: dict[str, Any], token: str) -> dict[str, Any]:
    if spec["auth_kind"] == "bearer":
        return {"token": token}
    prefix = "SSWS " if spec["kind"] == "okta" else ""  # Okta's own scheme
    return {"api_key": prefix + token}


def _examples() -> list[dict[str, Any]]:
    if not EXAMPLES.is_dir():
        raise ConfigurationError(
            f"the examples are not at {EXAMPLES}",
            next_action="run `grantflow demo` from a source checkout (what `make run` does)",
        )
    return [yaml.safe_load(path.read_text()) for path in sorted(EXAMPLES.glob("*.yaml"))]


def ensure_demo_workspace(session: Session, queue: Queue, settings: Settings) -> DemoWorkspace:
    """Create the demo workspace unless its admin exists already."""
    if find_user_by_email(session, DEMO_ADMIN) is not None:
        return DemoWorkspace(False, DEMO_ADMIN, None, DEMO_APPROVER, None, None)
    actor = Actor.system("demo")
    ttl = settings.token_ttl_days
    admin = create_user(
        session, actor, email=DEMO_ADMIN, display_name="Demo Admin", roles=[Role.ADMIN]
    )
    approver = create_user(
        session, actor, email=DEMO_APPROVER, display_name="Grace Hopper", roles=[Role.APPROVER]
    )
    workforce = create_application(
        session,
        actor,
        ApplicationCreate(
            name=WORKFORCE,
            description="Directory, Microsoft 365, Okta, Google, mailer and wiki — in the "
            "sandbox (`grantflow serve --sandbox`).",
            kind=ApplicationKind.DIRECTORY,
            labels={"demo": "true"},
        ),
    )
    token = sandbox_token(master_key(settings))
    keyring = keyring_for(settings)
    for name, spec in _connections(settings).items():
        connection = create_connection(
            session, actor, workforce.id, ConnectionCreate.model_validate({"name": name, **spec})
        )
        set_credential(session, actor, keyring, connection.id, _secret(spec, token))
    wiki = create_application(session, actor, DEMO_WIKI)
    spec = _connections(settings)["wiki"]
    connection = create_connection(
        session, actor, wiki.id, ConnectionCreate.model_validate({"name": "wiki", **spec})
    )
    set_credential(session, actor, keyring, connection.id, _secret(spec, token))
    for person in DEMO_STAFF:
        create_identity(session, actor, queue, person)
    onboarding_id = ""
    for document in _examples():
        applied = apply_document(session, actor, document, publish_it=True)
        if document["name"] == "Onboard new hire":
            onboarding_id = applied.workflow.id
    create_identity(session, actor, queue, DEMO_NEW_HIRE)  # joins: the onboarding run starts
    run_id = session.scalars(select(Run.id).where(Run.workflow_id == onboarding_id)).first()
    create_grant(
        session,
        actor,
        queue,
        GrantCreate(
            identity="ada@demo.grantflow.dev",
            application="Demo Wiki",
            role="editor",
            justification="writes the research pages",
        ),
    )
    _, raw = create_token(session, actor, user_id=admin.id, name="demo", ttl_days=ttl)
    _, approver_raw = create_token(session, actor, user_id=approver.id, name="demo", ttl_days=ttl)
    return DemoWorkspace(True, DEMO_ADMIN, raw, DEMO_APPROVER, approver_raw, run_id)
