"""One object of each kind the console's administration pages show, made with the same service
functions the API calls (as a system actor): an application with a connection, published
access_granted and access_revoked workflows and a draft that fails the publish gate, identities
with active grants and a revoked one, a job, an access review of the active grants, an incident
on the revoke run, a user with a token, and a CSV import of identities the workers have yet to
take. `PAGES` lists every administration page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from grantflow.access import applications, grants, identities, identity_imports, incidents
from grantflow.access.models import EventRun
from grantflow.auth import tokens
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Role
from grantflow.auth.users import create_user
from grantflow.config import Settings
from grantflow.connections import service as connections
from grantflow.connections.crypto import keyring_for
from grantflow.connections.schemas import ConnectionCreate
from grantflow.definitions import workflows
from grantflow.engine.models import Run
from grantflow.governance import review_queries, reviews
from grantflow.governance.review_config import Fallback, ReviewConfig, ReviewerKind
from grantflow.queue.database import DatabaseQueue
from grantflow.schedules import jobs
from grantflow.store.database import Database

SYSTEM = Actor.system("test")
APP = "Acme CRM"


def http_step(step_id: str, next_step: str | None = None, **config: Any) -> dict[str, Any]:
    step: dict[str, Any] = {
        "id": step_id,
        "type": "http",
        "config": {"connection": "crm", "method": "POST", "path": "/users", **config},
    }
    if next_step:
        step["next"] = next_step
    return step


def provisioning_document(
    name: str = "Provision CRM", trigger: str = "access_granted"
) -> dict[str, Any]:
    return {
        "name": name,
        "application": APP,
        "trigger": {"type": trigger},
        "steps": [http_step("create", body={"email": "{{ identity.email }}"})],
    }


BROKEN_DOCUMENT: dict[str, Any] = {
    "name": "Broken draft",
    "application": APP,
    "trigger": {"type": "manual"},
    "steps": [
        http_step("create", "notify", connection="nowhere", body={"x": "{{ identity.email "}),
        http_step("notify", "missing_step"),
        {"id": "orphan", "type": "condition", "config": {}},
    ],
}


@dataclass
class Seeded:
    application_id: str
    connection_id: str
    workflow_id: str
    broken_workflow_id: str
    revoke_workflow_id: str
    identity_id: str
    grant_id: str
    revoked_grant_id: str
    job_id: str
    review_id: str
    item_id: str  # the review item of Ada's grant
    other_grant_id: str  # Cy's active grant
    other_item_id: str  # its review item
    incident_id: str
    run_id: str
    user_id: str
    token_id: str
    import_id: str  # a queued identity import (Ada unchanged, one bad row)


def seed(database: Database, settings: Settings, *, reviewer: str | None = None) -> Seeded:
    """Every kind of object, once. `reviewer`: the e-mail of an existing user named as the
    access review's reviewer (default: the approver role)."""
    queue = DatabaseQueue(database)
    keyring = keyring_for(settings)
    with database.transaction() as session:
        app = applications.create_application(
            session, SYSTEM, applications.ApplicationCreate(name=APP)
        )
        connection = connections.create_connection(
            session,
            SYSTEM,
            app.id,
            ConnectionCreate(name="crm", base_url="http://127.0.0.1:9/api", auth_kind="bearer"),  # type: ignore[arg-type]
        )
        connections.set_credential(session, SYSTEM, keyring, connection.id, {"token": "t0k3n"})
        created = workflows.create_workflow(session, SYSTEM, provisioning_document())
        workflows.publish(session, SYSTEM, created.workflow.id, created.number)
        revoke = workflows.create_workflow(
            session, SYSTEM, provisioning_document("Deprovision CRM", "access_revoked")
        )
        workflows.publish(session, SYSTEM, revoke.workflow.id, revoke.number)
        broken = workflows.create_workflow(session, SYSTEM, BROKEN_DOCUMENT)
        ada = identities.create_identity(
            session,
            SYSTEM,
            queue,
            identities.IdentityCreate(email="ada@example.com", display_name="Ada Lovelace"),
        )
        bob = identities.create_identity(
            session,
            SYSTEM,
            queue,
            identities.IdentityCreate(email="bob@example.com", display_name="Bob Byte"),
        )
        grant = grants.create_grant(
            session, SYSTEM, queue, grants.GrantCreate(identity=ada.id, application=APP)
        )
        gone = grants.create_grant(
            session,
            SYSTEM,
            queue,
            grants.GrantCreate(identity=bob.id, application=APP, role="admin"),
        )
        cy = identities.create_identity(
            session,
            SYSTEM,
            queue,
            identities.IdentityCreate(email="cy@example.com", display_name="Cy Cipher"),
        )
        other = grants.create_grant(
            session,
            SYSTEM,
            queue,
            grants.GrantCreate(identity=cy.id, application=APP, role="editor"),
        )
        grants.revoke_grant(session, SYSTEM, queue, gone.id, comment="left the team")
        revoke_run = session.get(
            Run,
            session.query(EventRun.run_id)
            .filter(EventRun.grant_id == gone.id, EventRun.workflow_id == revoke.workflow.id)
            .scalar(),
        )
        assert revoke_run is not None
        incident = incidents.revocation_failed(
            session,
            revoke_run,
            "create",
            {"message": "HTTP 503 from the CRM", "class": "transient"},
        )
        assert incident is not None
        job = jobs.create_built_in(
            session,
            SYSTEM,
            jobs.BuiltInJobCreate(
                name="Nightly controls",
                kind="control_evaluation",
                cron="30 2 * * *",
                timezone="Europe/Berlin",
            ),
        )
        review = reviews.start_review(
            session,
            SYSTEM,
            queue,
            ReviewConfig(
                name="Quarterly CRM review",
                reviewer=ReviewerKind.USERS if reviewer else ReviewerKind.ROLES,
                users=[reviewer] if reviewer else [],
                roles=[] if reviewer else [Role.APPROVER],
                fallback=Fallback(roles=[Role.ADMIN]),
            ),
        )
        items = {i.grant_id: i.id for i in review_queries.list_items(session, review).items}
        imported = identity_imports.start(
            session,
            SYSTEM,
            b"email,display_name\nada@example.com,Ada Lovelace\nnot-an-email,Nobody\n",
            filename="people.csv",
        )
        user = create_user(session, SYSTEM, email="carol@example.com", roles=[Role.OPERATOR])
        token, _raw = tokens.create_token(
            session, SYSTEM, user_id=user.id, name="carol's script", ttl_days=30
        )
        return Seeded(
            application_id=app.id,
            connection_id=connection.id,
            workflow_id=created.workflow.id,
            broken_workflow_id=broken.workflow.id,
            revoke_workflow_id=revoke.workflow.id,
            identity_id=ada.id,
            grant_id=grant.id,
            revoked_grant_id=gone.id,
            job_id=job.id,
            review_id=review.id,
            item_id=items[grant.id],
            other_grant_id=other.id,
            other_item_id=items[other.id],
            incident_id=incident.id,
            run_id=revoke_run.id,
            user_id=user.id,
            token_id=token.id,
            import_id=imported.id,
        )


# every administration page, with the ids of `seed`'s objects in braces
PAGES = [
    "/workflows",
    "/workflows?name=crm&trigger=access_granted",
    "/workflows/{workflow_id}",
    "/workflows/{workflow_id}/versions/1",
    "/workflows/{broken_workflow_id}",
    "/workflows/{broken_workflow_id}/versions/1",
    "/workflows/{workflow_id}/diff?from=1&to=1",
    "/identities",
    "/identities/{identity_id}",
    "/identity-imports",
    "/identity-imports/{import_id}",
    "/identity-imports/{import_id}?outcome=rejected",
    "/grants",
    "/grants?status=active&automation=pending",
    "/grants/{grant_id}",
    "/grants/{revoked_grant_id}",
    "/connections",
    "/connections/{connection_id}",
    "/connections/{connection_id}/credential",
    "/jobs",
    "/jobs/{job_id}",
    "/reviews",
    "/reviews/{review_id}",
    "/controls",
    "/incidents",
    "/incidents/{incident_id}",
    "/audit",
    "/audit?action=grant.*&since=2020-01-01T00:00",
    "/audit/verify",
    "/users",
    "/users/{user_id}",
    "/tokens",
    # the filter forms as a browser sends them with "any" chosen (empty values)
    "/grants?status=&automation=",
    "/identities?q=&lifecycle_state=",
    "/identity-imports?status=",
    "/identity-imports/{import_id}?outcome=",
    "/connections?status=",
    "/jobs?status=&overdue=",
    "/reviews?status=",
    "/reviews/{review_id}?pending=",
    "/incidents?status=",
    "/audit?actor=&action=&target_type=&target_id=&since=&until=",
]


def page_path(template: str, seeded: Seeded) -> str:
    """A page of `PAGES` (or any path with `{field}` of `Seeded`) for these objects."""
    ids = {**vars(seeded), "number": "1", "evidence_id": "00000000-none"}
    return re.sub(r"\{(\w+)\}", lambda m: str(ids[m.group(1)]), template)
