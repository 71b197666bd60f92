"""The shipped examples, published as they are and run by the real engine: SCIM steps against
scim2-server, profile steps against the local identity providers, http steps against a local
mailer and wiki."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from grantflow.connections.crypto import Keyring
from grantflow.engine.runs import start_run
from grantflow.queue.database import DatabaseQueue
from grantflow.store.database import Database
from tests.support.engine import ACTOR, publish, running_worker, wait_status
from tests.support.idp.google import Google
from tests.support.idp.graph import Graph
from tests.support.idp.okta import Okta
from tests.support.idp.server import ProviderServer
from tests.support.provisioning import EXAMPLE_TOKENS, example, prepare_examples
from tests.support.scim_server import Tenant
from tests.support.target import Reply, Target, running_target

E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"  # the onboarding example's default licence
ADA = {
    "id": "emp-1815",
    "email": "ada@example.com",
    "display_name": "Ada Lovelace",
    "department": "Research",
    "employment_type": "employee",
    "start_date": "2026-01-05",
    "manager": "grace@example.com",
}


@dataclass
class World:
    db: Database
    keyring: Keyring
    tenant: Tenant
    graph: Graph
    okta: Okta
    google: Google
    web: Target  # the mailer and the wiki

    def run(self, name: str, trigger: str, identity: dict[str, Any], *statuses: str) -> Any:
        workflow_id = publish(self.db, example(name))
        with self.db.transaction() as session:
            run = start_run(
                session,
                ACTOR,
                DatabaseQueue(self.db),
                workflow_id,
                {},
                trigger=trigger,
                subject={"identity": identity},
            )
            run_id = run.id
        with running_worker(self.db, keyring=self.keyring):
            return wait_status(self.db, run_id, *statuses)


@pytest.fixture
def world(
    database: Database,
    keyring: Keyring,
    tenant: Tenant,
    graph: Graph,
    okta: Okta,
    google: Google,
    providers: ProviderServer,
) -> Iterator[World]:
    with running_target() as web:
        web.on("/send", Reply(202, {"queued": True}))
        web.on("/members/ada%40example.com", Reply(204))
        urls = {"directory": tenant.url, "mailer": web.url, "wiki": web.url}
        urls |= dict.fromkeys(("entra", "okta", "google"), providers.url)
        prepare_examples(database, keyring, urls)
        yield World(database, keyring, tenant, graph, okta, google, web)


def test_onboarding_example_provisions_every_system(world: World) -> None:
    """Onboarding an employee: directory account in its department group, Entra ID account
    with the office licence, and the welcome email sent through the mailer connection."""
    world.tenant.create("Group", {"displayName": "Research"})
    world.graph.seats[E3] = 5
    shown = world.run("onboarding.yaml", "identity_joined", ADA, "succeeded")

    (user,) = world.tenant.users(userName="ada@example.com")
    assert (user.display_name, user.external_id) == ("Ada Lovelace", "emp-1815")
    assert world.tenant.members("Research") == {user.id}
    (account,) = world.graph.users.values()
    assert (account["userPrincipalName"], account["department"]) == ("ada@example.com", "Research")
    assert account["assignedLicenses"] == [{"skuId": E3, "disabledPlans": []}]
    (mail,) = world.web.calls("/send")
    assert mail.body["to"] == "ada@example.com"
    assert mail.body["variables"] == {"first_day": "2026-01-05", "manager": "grace@example.com"}
    assert mail.headers["authorization"] == f"Bearer {EXAMPLE_TOKENS['mailer']}"
    assert [s["step_id"] for s in shown["steps"]] == [
        "create_user",
        "add_groups",
        "create_mailbox",
        "needs_licence",
        "assign_licence",
        "welcome_email",
    ]


def test_onboarding_a_contractor_skips_the_licence(world: World) -> None:
    """A contractor gets the accounts and the email but no licence."""
    world.tenant.create("Group", {"displayName": "Research"})
    contractor = {**ADA, "employment_type": "contractor"}
    shown = world.run("onboarding.yaml", "identity_joined", contractor, "succeeded")
    assert "assign_licence" not in [s["step_id"] for s in shown["steps"]]
    (account,) = world.graph.users.values()
    assert account["assignedLicenses"] == []


def test_onboarding_without_seats_fails_with_the_licence_action(world: World) -> None:
    """No seats left: the run fails at assign_licence saying to free or buy seats; the accounts
    made before it stay (a failed run never rolls back)."""
    world.tenant.create("Group", {"displayName": "Research"})
    world.graph.seats[E3] = 0
    shown = world.run("onboarding.yaml", "identity_joined", ADA, "failed")
    assert shown["failure"]["step_id"] == "assign_licence"
    assert shown["failure"]["message"] == (
        f"No available licenses for SKU {E3}: free or buy seats, then Retry"
    )
    assert len(world.tenant.users()) == 1


def _leaver_accounts(world: World) -> None:
    world.tenant.create("User", {"userName": "ada@example.com", "active": True})
    world.graph.users["g1"] = {
        "id": "g1",
        "userPrincipalName": "ada@example.com",
        "accountEnabled": True,
    }
    world.google.users["9"] = {"id": "9", "primaryEmail": "ada@example.com", "suspended": False}
    world.okta.users["00u1"] = {
        "id": "00u1",
        "status": "ACTIVE",
        "profile": {"login": "ada@example.com"},
    }


def test_offboarding_example_revokes_every_system(world: World) -> None:
    """Offboarding deactivates the directory account, disables Entra ID and ends its sessions,
    suspends Google, deactivates Okta and removes the wiki membership."""
    _leaver_accounts(world)
    world.run("offboarding.yaml", "identity_left", {"email": "ada@example.com"}, "succeeded")
    (user,) = world.tenant.users(userName="ada@example.com")
    assert user.active is False
    assert world.graph.users["g1"]["accountEnabled"] is False
    assert world.graph.revoked == ["g1"]
    assert world.google.users["9"]["suspended"] is True
    assert world.okta.users["00u1"]["status"] == "DEPROVISIONED"
    (removal,) = world.web.calls("/members/ada%40example.com")
    assert removal.method == "DELETE"
    assert removal.headers["x-api-key"] == EXAMPLE_TOKENS["wiki"]


def test_offboarding_escalates_a_revoke_that_cannot_succeed(world: World) -> None:
    """A revoke that fails for good (no Okta user) escalates to a person instead of leaving
    the leaver half-revoked silently; the steps before it have acted."""
    _leaver_accounts(world)
    del world.okta.users["00u1"]
    shown = world.run("offboarding.yaml", "identity_left", {"email": "ada@example.com"}, "waiting")
    assert (shown["waiting_reason"], shown["current_step"]) == ("escalated", "deactivate_okta")
    assert shown["failure"]["code"] == "not_found"
    assert "a person must decide" in shown["failure"]["next_action"]
    assert world.google.users["9"]["suspended"] is True
