"""The shipped examples, published as they are and run by the real engine: SCIM steps against
scim2-server, profile steps against the local identity providers, http steps against a local
mailer and wiki — and the people in them: the manager who approves an onboarding, the
operator who removes a leaver's badge by hand."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Role, permissions_for
from grantflow.auth.users import create_user
from grantflow.connections.crypto import Keyring
from grantflow.engine.runs import start_run
from grantflow.errors import ValidationError
from grantflow.people import decisions
from grantflow.queue.database import DatabaseQueue
from grantflow.store.database import Database
from tests.support.engine import ACTOR, publish, running_worker, wait_for, wait_status
from tests.support.idp.google import Google
from tests.support.idp.graph import Graph
from tests.support.idp.okta import Okta
from tests.support.idp.server import ProviderServer
from tests.support.provisioning import EXAMPLE_TOKENS, example, prepare_examples
from tests.support.scim_server import Tenant
from tests.support.target import Reply, Target, running_target

E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"  # the onboarding example's default licence
GRACE = "grace@example.com"  # Ada's manager: a Grantflow user with the approver role
HELPDESK = "helpdesk@example.com"  # another approver (approvals without a manager)
OPS = "ops@example.com"  # an operator (the badge system has no connector)
ADA = {
    "id": "emp-1815",
    "email": "ada@example.com",
    "display_name": "Ada Lovelace",
    "department": "Research",
    "attributes": {},
    "start_date": "2026-01-05",
    # as the identity snapshot has it
    "manager": {"id": "emp-1906", "email": GRACE, "display_name": "Grace Hopper"},
}
ONBOARDED = [
    "create_user",
    "add_groups",
    "create_mailbox",
    "needs_licence",
    "assign_licence",
    "welcome_email",
]

# what a person does once the run waits on them (a run id in, nothing out)
Person = Callable[[str], None]


@dataclass
class World:
    db: Database
    keyring: Keyring
    tenant: Tenant
    graph: Graph
    okta: Okta
    google: Google
    web: Target  # the mailer and the wiki
    people: dict[str, Actor]

    def run(
        self,
        name: str,
        trigger: str,
        identity: dict[str, Any],
        *statuses: str,
        person: Person | None = None,
    ) -> Any:
        """Publish the example, start a run about `identity`, let `person` act once it waits
        on them, and return the run's detail once it reaches one of `statuses`."""
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
            if person is not None:
                person(run_id)
            return wait_status(self.db, run_id, *statuses)

    def waiting_on_person(self, run_id: str) -> dict[str, Any]:
        """The run's detail once it waits on an approval or a human task."""
        return wait_for(
            self.db,
            run_id,
            lambda d: d["status"] == "waiting" and d["waiting_reason"] in ("approval", "task"),
        )

    def act(
        self, email: str, task_id: str, action: str, data: dict[str, Any] | None = None
    ) -> None:
        """`email` decides the task, as the API would have them decide it."""
        with self.db.transaction() as session:
            decisions.decide(
                session,
                self.people[email],
                DatabaseQueue(self.db),
                task_id,
                decisions.Action(action),
                comment="done in the test" if action != "approve" else None,
                data=data,
            )


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
        people = {}
        with database.transaction() as session:
            for email, role in (
                (GRACE, Role.APPROVER),
                (HELPDESK, Role.APPROVER),
                (OPS, Role.OPERATOR),
            ):
                user = create_user(session, ACTOR, email=email, roles=[role])
                people[email] = Actor(email, user.id, permissions_for([role]))
        yield World(database, keyring, tenant, graph, okta, google, web, people)


def manager_approves(world: World) -> Person:
    """Grace, Ada's manager, finds the approval waiting for her (nothing provisioned yet)
    and approves it."""

    def act(run_id: str) -> None:
        waiting = world.waiting_on_person(run_id)
        assert (waiting["waiting_reason"], waiting["current_step"]) == (
            "approval",
            "manager_approval",
        )
        assert waiting["waiting_for"]["can_act"] == [GRACE]
        assert waiting["waiting_for"]["title"] == "Approve the accounts of Ada Lovelace"
        assert world.tenant.users() == []
        assert world.graph.users == {}
        world.act(GRACE, waiting["waiting_for"]["task_id"], "approve")

    return act


def test_onboarding_example_provisions_every_system(world: World) -> None:
    """Onboarding an employee: the manager approves first (nothing is provisioned before);
    then the directory account in its department group, the Entra ID account with the office
    licence, and the welcome email naming the manager, sent through the mailer connection."""
    world.tenant.create("Group", {"displayName": "Research"})
    world.graph.seats[E3] = 5
    shown = world.run(
        "onboarding.yaml", "identity_joined", ADA, "succeeded", person=manager_approves(world)
    )

    (user,) = world.tenant.users(userName="ada@example.com")
    assert (user.display_name, user.external_id) == ("Ada Lovelace", "emp-1815")
    assert world.tenant.members("Research") == {user.id}
    (account,) = world.graph.users.values()
    assert (account["userPrincipalName"], account["department"]) == ("ada@example.com", "Research")
    assert account["assignedLicenses"] == [{"skuId": E3, "disabledPlans": []}]
    (mail,) = world.web.calls("/send")
    assert mail.body["to"] == "ada@example.com"
    assert mail.body["variables"] == {"first_day": "2026-01-05", "manager": "Grace Hopper"}
    assert mail.headers["authorization"] == f"Bearer {EXAMPLE_TOKENS['mailer']}"
    assert [s["step_id"] for s in shown["steps"]] == ["has_manager", "manager_approval", *ONBOARDED]
    approval = shown["steps"][1]["output"]
    assert (approval["approved"], approval["approvers"]) == (True, [GRACE])


def test_onboarding_waits_for_the_approver_role_without_a_manager(world: World) -> None:
    """A new hire without a manager goes to the approver role at once; an approver's approval
    lets the onboarding go on."""
    world.tenant.create("Group", {"displayName": "Research"})
    world.graph.seats[E3] = 5

    def helpdesk_approves(run_id: str) -> None:
        waiting = world.waiting_on_person(run_id)
        assert waiting["current_step"] == "access_approval"
        assert waiting["waiting_for"]["assignees"] == ["role approver"]
        assert sorted(waiting["waiting_for"]["can_act"]) == [GRACE, HELPDESK]
        assert waiting["waiting_for"]["due_at"] is not None  # explicit: refused after 3 days
        world.act(HELPDESK, waiting["waiting_for"]["task_id"], "approve")

    orphan = {**ADA, "manager": None}
    shown = world.run(
        "onboarding.yaml", "identity_joined", orphan, "succeeded", person=helpdesk_approves
    )
    assert [s["step_id"] for s in shown["steps"]] == ["has_manager", "access_approval", *ONBOARDED]
    assert shown["steps"][1]["output"]["approvers"] == [HELPDESK]
    (mail,) = world.web.calls("/send")
    assert mail.body["variables"]["manager"] == ""


def test_onboarding_rejected_by_the_manager_provisions_nothing(world: World) -> None:
    """The manager's rejection fails the run as rejected before any account is made."""

    def manager_rejects(run_id: str) -> None:
        task_id = world.waiting_on_person(run_id)["waiting_for"]["task_id"]
        world.act(GRACE, task_id, "reject")

    shown = world.run("onboarding.yaml", "identity_joined", ADA, "failed", person=manager_rejects)
    assert (shown["failure"]["class"], shown["failure"]["step_id"]) == (
        "rejected",
        "manager_approval",
    )
    assert shown["failure"]["message"] == f"rejected by {GRACE}: done in the test"
    assert world.tenant.users() == []
    assert world.graph.users == {}
    assert world.web.calls("/send") == []


def test_onboarding_a_contractor_skips_the_licence(world: World) -> None:
    """A contractor gets the accounts and the email but no licence."""
    world.tenant.create("Group", {"displayName": "Research"})
    contractor = {**ADA, "attributes": {"employment_type": "contractor"}}
    shown = world.run(
        "onboarding.yaml",
        "identity_joined",
        contractor,
        "succeeded",
        person=manager_approves(world),
    )
    assert "assign_licence" not in [s["step_id"] for s in shown["steps"]]
    (account,) = world.graph.users.values()
    assert account["assignedLicenses"] == []


def test_onboarding_without_seats_fails_with_the_licence_action(world: World) -> None:
    """No seats left: the run fails at assign_licence saying to free or buy seats; the accounts
    made before it stay (a failed run never rolls back)."""
    world.tenant.create("Group", {"displayName": "Research"})
    world.graph.seats[E3] = 0
    shown = world.run(
        "onboarding.yaml", "identity_joined", ADA, "failed", person=manager_approves(world)
    )
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


LEAVER = {"email": "ada@example.com", "display_name": "Ada Lovelace"}


def test_offboarding_example_revokes_every_system(world: World) -> None:
    """Offboarding deactivates the directory account, disables Entra ID and ends its sessions,
    suspends Google, deactivates Okta and removes the wiki membership; then an operator
    removes the badge by hand (no connector) and submits the task's form."""
    _leaver_accounts(world)

    def operator_removes_the_badge(run_id: str) -> None:
        waiting = world.waiting_on_person(run_id)
        assert (waiting["waiting_reason"], waiting["current_step"]) == ("task", "remove_badge")
        assert waiting["waiting_for"]["title"] == "Remove Ada Lovelace from the badge system"
        assert waiting["waiting_for"]["assignees"] == ["role operator"]
        assert waiting["waiting_for"]["can_act"] == [OPS]
        # every connected system is revoked before the manual step
        assert world.okta.users["00u1"]["status"] == "DEPROVISIONED"
        assert len(world.web.calls("/members/ada%40example.com")) == 1
        task_id = waiting["waiting_for"]["task_id"]
        with pytest.raises(ValidationError) as refused:
            world.act(OPS, task_id, "submit", {"done": False})
        fields = {d["field"] for d in refused.value.details}
        assert fields == {"data.ticket", "data.done"}  # ticket missing; done must be true
        world.act(OPS, task_id, "submit", {"done": True, "ticket": "SEC-4711"})

    shown = world.run(
        "offboarding.yaml",
        "identity_left",
        LEAVER,
        "succeeded",
        person=operator_removes_the_badge,
    )
    (user,) = world.tenant.users(userName="ada@example.com")
    assert user.active is False
    assert world.graph.users["g1"]["accountEnabled"] is False
    assert world.graph.revoked == ["g1"]
    assert world.google.users["9"]["suspended"] is True
    assert world.okta.users["00u1"]["status"] == "DEPROVISIONED"
    (removal,) = world.web.calls("/members/ada%40example.com")
    assert removal.method == "DELETE"
    assert removal.headers["x-api-key"] == EXAMPLE_TOKENS["wiki"]
    badge = shown["steps"][-1]
    assert (badge["step_id"], badge["status"]) == ("remove_badge", "succeeded")
    assert badge["output"] == {"done": True, "ticket": "SEC-4711"}


def test_offboarding_escalates_a_revoke_that_cannot_succeed(world: World) -> None:
    """A revoke that fails for good (no Okta user) escalates to a person instead of leaving
    the leaver half-revoked silently; the steps before it have acted."""
    _leaver_accounts(world)
    del world.okta.users["00u1"]
    shown = world.run("offboarding.yaml", "identity_left", LEAVER, "waiting")
    assert (shown["waiting_reason"], shown["current_step"]) == ("escalated", "deactivate_okta")
    assert shown["failure"]["code"] == "not_found"
    assert "a person must decide" in shown["failure"]["next_action"]
    assert world.google.users["9"]["suspended"] is True
