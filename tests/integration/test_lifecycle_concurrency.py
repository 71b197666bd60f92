"""Lifecycle states settle under concurrency: when one event starts several runs that a worker
finishes side by side, every identity still ends in its final state (on both databases)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select

from grantflow.access import grants, identities
from grantflow.access.applications import ApplicationCreate, create_application
from grantflow.access.identities import IdentityCreate, IdentityFields
from grantflow.access.models import EventRun, Identity
from grantflow.engine.models import Run
from grantflow.engine.states import TERMINAL
from grantflow.queue.database import DatabaseQueue
from grantflow.store.database import Database
from tests.support.engine import ACTOR, publish, running_worker

ROUNDS = 3


def quick(name: str, trigger: str, application: str | None = None) -> dict[str, Any]:
    """A lifecycle workflow of two local steps (no external system), so runs end together."""
    return {
        "name": name,
        "trigger": {"type": trigger},
        **({"application": application} if application else {}),
        "steps": [
            {
                "id": "a",
                "type": "set",
                "config": {"values": {"who": "{{ identity.email }}"}},
                "next": "b",
            },
            {"id": "b", "type": "set", "config": {"values": {"done": True}}},
        ],
    }


def states(db: Database, ids: list[str]) -> dict[str, str]:
    with db.transaction() as session:
        rows = session.execute(
            select(Identity.id, Identity.lifecycle_state).where(Identity.id.in_(ids))
        ).all()
        return {i: str(s) for i, s in rows}


def wait_runs_finished(db: Database, ids: list[str], timeout: float = 120.0) -> list[str]:
    """Wait until every run started for these identities is terminal; their statuses."""
    deadline = time.monotonic() + timeout
    while True:
        with db.transaction() as session:
            rows = (
                session.execute(
                    select(Run.status)
                    .join(EventRun, EventRun.run_id == Run.id)
                    .where(EventRun.identity_id.in_(ids))
                )
                .scalars()
                .all()
            )
        if rows and all(s in {str(t) for t in TERMINAL} for s in rows):
            return [str(s) for s in rows]
        assert time.monotonic() < deadline, f"runs still in flight: {rows}"
        time.sleep(0.05)


def test_joiners_with_two_onboarding_workflows_all_become_active(database: Database) -> None:
    """8 joiners each starting two onboarding runs, finished by 4 worker slots at once: every
    identity ends active, round after round."""
    publish(database, quick("Welcome", "identity_joined"))
    publish(database, quick("Laptop", "identity_joined"))
    queue = DatabaseQueue(database)
    for round_ in range(ROUNDS):
        with database.transaction() as session:
            ids = [
                identities.create_identity(
                    session, ACTOR, queue, IdentityCreate(email=f"j{round_}-{n}@example.com")
                ).id
                for n in range(8)
            ]
        assert set(states(database, ids).values()) == {"joiner"}
        with running_worker(database, concurrency=4):
            statuses = wait_runs_finished(database, ids)
        assert statuses.count("succeeded") == 16
        assert states(database, ids) == dict.fromkeys(ids, "active")
    queue.close()


def test_leavers_with_two_revocations_and_offboarding_all_end_left(database: Database) -> None:
    """6 leavers, each with grants in two applications (a revoke workflow each) and a global
    offboarding workflow, finished by 4 worker slots at once: every identity ends left."""
    with database.transaction() as session:
        apps = [
            create_application(session, ACTOR, ApplicationCreate(name=name)).id
            for name in ("Wiki", "CRM")
        ]
    for app_id, name in zip(apps, ("Wiki", "CRM"), strict=True):
        publish(database, quick(f"{name} revoke", "access_revoked", app_id))
    publish(database, quick("Goodbye", "identity_left"))
    queue = DatabaseQueue(database)
    for round_ in range(ROUNDS):
        with database.transaction() as session:
            ids = []
            for n in range(6):
                person = identities.create_identity(
                    session, ACTOR, queue, IdentityCreate(email=f"l{round_}-{n}@example.com")
                )
                for app_id in apps:
                    grants.create_grant(
                        session,
                        ACTOR,
                        queue,
                        grants.GrantCreate(identity=person.id, application=app_id),
                    )
                ids.append(person.id)
        with database.transaction() as session:
            for identity_id in ids:
                identities.update_identity(
                    session, ACTOR, queue, identity_id, IdentityFields(active=False)
                )
        assert set(states(database, ids).values()) == {"leaver"}
        with running_worker(database, concurrency=4):
            statuses = wait_runs_finished(database, ids)
        assert statuses.count("succeeded") == 18
        assert states(database, ids) == dict.fromkeys(ids, "left")
    queue.close()
