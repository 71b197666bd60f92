"""The demo workspace `make run` starts with: an admin (token printed once), two applications,
three identities and a grant (whose chip says why no workflow ran for it)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from grantflow.access.applications import ApplicationCreate, ApplicationKind, create_application
from grantflow.access.grants import GrantCreate, create_grant
from grantflow.access.identities import IdentityCreate, create_identity
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Role
from grantflow.auth.tokens import create_token
from grantflow.auth.users import create_user, find_user_by_email
from grantflow.queue.interface import Queue

DEMO_ADMIN = "admin@demo.grantflow.dev"
DEMO_APPLICATIONS = [
    ApplicationCreate(
        name="Demo Directory",
        description="A demo identity directory reached over SCIM 2.0.",
        kind=ApplicationKind.DIRECTORY,
        labels={"demo": "true"},
    ),
    ApplicationCreate(
        name="Demo Wiki",
        description="A demo SaaS wiki reached over its REST API.",
        kind=ApplicationKind.SAAS,
        homepage_url="https://wiki.example.com/",
        labels={"demo": "true"},
    ),
]


DEMO_IDENTITIES = [
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
    ),
]


@dataclass(frozen=True)
class DemoWorkspace:
    created: bool
    admin_email: str
    token: str | None  # only when just created: it is never shown again


def ensure_demo_workspace(session: Session, queue: Queue, ttl_days: int) -> DemoWorkspace:
    """Create the demo workspace unless its admin exists already."""
    if find_user_by_email(session, DEMO_ADMIN) is not None:
        return DemoWorkspace(created=False, admin_email=DEMO_ADMIN, token=None)
    actor = Actor.system("demo")
    admin = create_user(
        session, actor, email=DEMO_ADMIN, display_name="Demo Admin", roles=[Role.ADMIN]
    )
    for app in DEMO_APPLICATIONS:
        create_application(session, actor, app)
    for person in DEMO_IDENTITIES:
        create_identity(session, actor, queue, person)
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
    _, raw = create_token(session, actor, user_id=admin.id, name="demo", ttl_days=ttl_days)
    return DemoWorkspace(created=True, admin_email=DEMO_ADMIN, token=raw)
