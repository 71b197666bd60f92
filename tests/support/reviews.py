"""Access-review inventories made through Grantflow's own services: people with managers who
may review, each with a grant to an application, and a manager campaign over it."""

from __future__ import annotations

from typing import Any

from grantflow.access.applications import ApplicationCreate, ApplicationKind, create_application
from grantflow.access.grants import GrantCreate, create_grant
from grantflow.access.identities import IdentityCreate, create_identity
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Role
from grantflow.auth.users import create_user
from grantflow.governance.review_config import ReviewConfig
from grantflow.governance.reviews import start_review
from grantflow.queue.database import DatabaseQueue
from grantflow.store.database import Database

ACTOR = Actor.system("test")
MANAGERS = 3


def people(db: Database, app: str, count: int) -> None:
    """`count` identities, each managed by one of MANAGERS managers (users who may review),
    each with a grant to `app`."""
    queue = DatabaseQueue(db)
    with db.transaction() as session:
        data = ApplicationCreate(name=app, kind=ApplicationKind("directory"))
        create_application(session, ACTOR, data)
        for n in range(MANAGERS):
            boss = f"{app.lower()}-boss{n}@example.com"
            create_user(session, ACTOR, email=boss, roles=[Role.APPROVER])
            create_identity(session, ACTOR, queue, IdentityCreate(email=boss))
        for n in range(count):
            who = f"{app.lower()}-person{n}@example.com"
            boss = f"{app.lower()}-boss{n % MANAGERS}@example.com"
            create_identity(session, ACTOR, queue, IdentityCreate(email=who, manager=boss))
            create_grant(session, ACTOR, queue, GrantCreate(identity=who, application=app))
    queue.close()


def manager_campaign(db: Database, app: str, **config: Any) -> str:
    """A manager campaign over `app` (fallback: admins), started now: its id."""
    parsed = ReviewConfig.model_validate(
        {
            "name": f"{app} review",
            "scope": {"applications": [app]},
            "reviewer": "manager",
            "fallback": {"roles": ["admin"]},
            **config,
        }
    )
    queue = DatabaseQueue(db)
    try:
        with db.transaction() as session:
            return start_review(session, ACTOR, queue, parsed).id
    finally:
        queue.close()
