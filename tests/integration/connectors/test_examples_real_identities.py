"""The shipped examples run on identities as Grantflow makes them — created over the REST API and
by a CSV import — not on hand-written snapshots: the lifecycle starts the runs, people act over
the API, and every system is a local target (scim2-server, the identity-provider stand-ins, a
mailer and a wiki)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from grantflow.access.identities import IdentityCreate, create_identity
from grantflow.auth.permissions import Role
from grantflow.connections.crypto import Keyring
from grantflow.queue.database import DatabaseQueue
from grantflow.store.database import Database
from tests.support.connections import API, allowing_loopback, ok, serving_api
from tests.support.engine import ACTOR, publish, running_worker, wait_for, wait_status
from tests.support.idp.google import Google
from tests.support.idp.graph import Graph
from tests.support.idp.okta import Okta
from tests.support.idp.server import ProviderServer
from tests.support.provisioning import example, prepare_examples
from tests.support.scim_server import Tenant
from tests.support.target import Reply, Target, running_target

E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"  # the onboarding example's default licence
GRACE = "grace@example.com"  # the new hires' manager, a Grantflow approver
OPS = "ops@example.com"  # an operator (the offboarding's badge task)


@dataclass
class Office:
    db: Database
    keyring: Keyring
    tenant: Tenant
    graph: Graph
    okta: Okta
    google: Google
    web: Target  # the mailer and the wiki
    admin: httpx.Client
    grace: httpx.Client
    ops: httpx.Client

    def joined_run(self, identity_id: str) -> str:
        """The run the identity's identity_joined event started."""
        events = ok(self.admin.get(f"{API}/identities/{identity_id}/events"))
        (joined,) = [e for e in events if e["kind"] == "identity_joined"]
        (dispatched,) = [d for d in joined["dispatch"] if d.get("run_id")]
        return str(dispatched["run_id"])

    def left_run(self, identity_id: str) -> str:
        events = ok(self.admin.get(f"{API}/identities/{identity_id}/events"))
        (left,) = [e for e in events if e["kind"] == "identity_left"]
        (dispatched,) = [d for d in left["dispatch"] if d.get("run_id")]
        return str(dispatched["run_id"])

    def task_of(self, run_id: str) -> str:
        waiting = wait_for(
            self.db,
            run_id,
            lambda d: d["status"] == "waiting" and d["waiting_reason"] in ("approval", "task"),
        )
        return str(waiting["waiting_for"]["task_id"])

    def onboarded(self, run_id: str) -> dict[str, Any]:
        """Grace approves over the API; the run's detail once it succeeded."""
        task_id = self.task_of(run_id)
        ok(self.grace.post(f"{API}/tasks/{task_id}/approve", json={}))
        return wait_status(self.db, run_id, "succeeded", "failed")


@pytest.fixture
def office(
    database: Database,
    keyring: Keyring,
    tenant: Tenant,
    graph: Graph,
    okta: Okta,
    google: Google,
    providers: ProviderServer,
    tmp_path: Path,
) -> Iterator[Office]:
    """Both examples published against local targets; Grace (an approver and, as an identity,
    the manager) and an operator; the API over HTTP and a worker."""
    tenant.create("Group", {"displayName": "Research"})
    graph.seats[E3] = 5
    with running_target() as web:
        web.on("/send", Reply(202, {"queued": True}))
        web.on("/members/ada%40example.com", Reply(204))
        urls = {"directory": tenant.url, "mailer": web.url, "wiki": web.url}
        urls |= dict.fromkeys(("entra", "okta", "google"), providers.url)
        prepare_examples(database, keyring, urls)
        with database.transaction() as session:  # there before the workflows: no run
            create_identity(
                session,
                ACTOR,
                DatabaseQueue(database),
                IdentityCreate(email=GRACE, display_name="Grace Hopper", department="Research"),
            )
        for name in ("onboarding.yaml", "offboarding.yaml"):
            publish(database, example(name))
        settings = allowing_loopback(database, tmp_path)
        with (
            serving_api(settings, database) as api,
            api.as_role(Role.ADMIN) as admin,
            api.as_role(Role.APPROVER, GRACE) as grace,
            api.as_role(Role.OPERATOR, OPS) as ops,
            running_worker(database, keyring=keyring),
        ):
            yield Office(database, keyring, tenant, graph, okta, google, web, admin, grace, ops)


def test_an_identity_created_over_the_api_is_onboarded_and_offboarded(office: Office) -> None:
    """An employee created with POST /identities (no employment type: an employee) is onboarded
    with a licence once her manager approves; leaving offboards her once the operator removed
    the badge. Both runs succeed."""
    ada = ok(
        office.admin.post(
            f"{API}/identities",
            json={
                "email": "ada@example.com",
                "given_name": "Ada",
                "family_name": "Lovelace",
                "department": "Research",
                "manager": GRACE,
                "start_date": "2026-01-05",
            },
        ),
        201,
    )
    shown = office.onboarded(office.joined_run(ada["id"]))
    assert shown["status"] == "succeeded", shown["failure"]
    assert "assign_licence" in [s["step_id"] for s in shown["steps"]]
    (account,) = office.graph.users.values()
    assert account["assignedLicenses"] == [{"skuId": E3, "disabledPlans": []}]
    (mail,) = office.web.calls("/send")
    assert mail.body["variables"] == {"first_day": "2026-01-05", "manager": "Grace Hopper"}

    # her Okta and Google accounts were made outside the examples
    office.google.users["9"] = {"id": "9", "primaryEmail": "ada@example.com", "suspended": False}
    office.okta.users["00u1"] = {
        "id": "00u1",
        "status": "ACTIVE",
        "profile": {"login": "ada@example.com"},
    }
    ok(office.admin.post(f"{API}/identities/{ada['id']}/leave"))
    run_id = office.left_run(ada["id"])
    task_id = office.task_of(run_id)
    ok(
        office.ops.post(
            f"{API}/tasks/{task_id}/submit", json={"data": {"done": True, "ticket": "SEC-1"}}
        )
    )
    left = wait_status(office.db, run_id, "succeeded", "failed")
    assert left["status"] == "succeeded", left["failure"]
    (user,) = office.tenant.users(userName="ada@example.com")
    assert user.active is False
    assert office.okta.users["00u1"]["status"] == "DEPROVISIONED"
    assert office.google.users["9"]["suspended"] is True


def test_a_contractor_imported_from_csv_is_onboarded_without_a_licence(office: Office) -> None:
    """A contractor imported from a CSV file (`attr.employment_type`) is onboarded once the
    manager approves, with the accounts and the welcome email but no licence."""
    csv = (
        "email,display_name,department,manager,attr.employment_type\n"
        f"lin@example.com,Lin Chen,Research,{GRACE},contractor\n"
    )
    report = ok(
        office.admin.post(
            f"{API}/identities/import",
            content=csv.encode(),
            headers={"Content-Type": "text/csv"},
        )
    )
    (row,) = report["results"]
    assert (row["outcome"], row["events"]) == ("created", ["identity_joined"])
    shown = office.onboarded(office.joined_run(row["identity_id"]))
    assert shown["status"] == "succeeded", shown["failure"]
    assert "assign_licence" not in [s["step_id"] for s in shown["steps"]]
    (account,) = office.graph.users.values()
    assert (account["userPrincipalName"], account["assignedLicenses"]) == ("lin@example.com", [])
    assert len(office.tenant.users(userName="lin@example.com")) == 1
