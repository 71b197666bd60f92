"""Access reviews over HTTP: a campaign routes each grant in scope to the identity's manager
(or the fallback reviewer, saying why), reviewers decide keep or revoke, a revoke revokes the
grant and its access_revoked workflow removes the account from a scim2-server target, and
closing the campaign gives undecided items the default. Also: the worker timer that closes
ended campaigns and reminds reviewers, a scheduled access_review job, the CLI, permissions,
the CSV report and the audit trail."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import update

from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Role
from grantflow.config import Settings
from grantflow.engine import hooks
from grantflow.errors import ValidationError
from grantflow.governance import review_listeners
from grantflow.governance.models import AccessReview
from grantflow.queue.database import DatabaseQueue
from grantflow.schedules import jobs, scheduler
from grantflow.store.base import utcnow
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.connections import (
    API,
    allowing_loopback,
    connection_worker,
    make_application,
    make_connection,
    ok,
    put_credential,
    serving_api,
)
from tests.support.engine import wait_status
from tests.support.people import error, publish
from tests.support.processes import grantflow_env, json_output, run_grantflow
from tests.support.scim_server import TOKEN, ScimServer, Tenant, running_scim_server

ACTOR = Actor.system("test")


@pytest.fixture(scope="module")
def scim_server() -> Iterator[ScimServer]:
    with running_scim_server() as server:
        yield server


def email(name: str) -> str:
    return f"{name}@example.com"


@dataclass
class World:
    api: Api
    admin: httpx.Client
    settings: Settings
    tmp_path: Path
    clients: dict[str, httpx.Client]

    def user(self, name: str, *roles: Role) -> httpx.Client:
        client = self.api.client(self.api.user_token(email(name), *roles))
        self.clients[name] = client
        return client

    def user_id(self, name: str) -> str:
        users = ok(self.admin.get(f"{API}/users", params={"limit": 500}))["items"]
        return str(next(u["id"] for u in users if u["email"] == email(name)))

    def person(self, name: str, **fields: Any) -> dict[str, Any]:
        body = {"email": email(name), "display_name": name.title(), **fields}
        created: dict[str, Any] = ok(self.admin.post(f"{API}/identities", json=body), 201)
        return created

    def grant(self, person: dict[str, Any], app: str) -> str:
        body = {"identity": person["id"], "application": app}
        return str(ok(self.admin.post(f"{API}/grants", json=body), 201)["id"])

    def shown_grant(self, grant_id: str) -> dict[str, Any]:
        shown: dict[str, Any] = ok(self.admin.get(f"{API}/grants/{grant_id}"))
        return shown

    def review(self, review_id: str) -> dict[str, Any]:
        shown: dict[str, Any] = ok(self.admin.get(f"{API}/reviews/{review_id}"))
        return shown

    def items(self, review_id: str, client: httpx.Client | None = None, **params: Any) -> Any:
        client = client or self.admin
        return ok(client.get(f"{API}/reviews/{review_id}/items", params=params))["items"]

    def by_identity(self, review_id: str) -> dict[str, dict[str, Any]]:
        return {i["identity"]["email"]: i for i in self.items(review_id)}

    def decide(
        self, client: httpx.Client, item: dict[str, Any], decision: str, comment: str | None = None
    ) -> httpx.Response:
        body: dict[str, Any] = {"decision": decision}
        if comment is not None:
            body["comment"] = comment
        return client.post(
            f"{API}/reviews/{item['review_id']}/items/{item['id']}/decide", json=body
        )

    def notifications(self, client: httpx.Client) -> list[dict[str, Any]]:
        return list(ok(client.get(f"{API}/notifications", params={"limit": 100}))["items"])

    def audit(self, review_id: str) -> list[dict[str, Any]]:
        params: dict[str, str | int] = {
            "target_type": "access_review",
            "target_id": review_id,
            "limit": 100,
        }
        return list(ok(self.admin.get(f"{API}/audit", params=params))["items"])

    def report(self, review_id: str) -> list[dict[str, str]]:
        response = self.admin.get(f"{API}/reviews/{review_id}/report.csv")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/csv")
        assert "attachment" in response.headers["content-disposition"]
        return list(csv.DictReader(io.StringIO(response.text)))

    def cli(self, *args: str) -> Any:
        secret = self.settings.secret_key
        env = grantflow_env(
            database_url=self.api.database.url.render_as_string(hide_password=False),
            secret_key=secret.get_secret_value() if secret else "",
            secret_key_file=self.tmp_path / "unused.key",
        )
        return run_grantflow(*args, env=env, cwd=self.tmp_path)


@contextmanager
def world(database: Database, tmp_path: Path) -> Iterator[World]:
    settings = allowing_loopback(database, tmp_path)
    with serving_api(settings, database) as api, api.as_role(Role.ADMIN, email("admin")) as admin:
        made = World(api, admin, settings, tmp_path, {})
        try:
            yield made
        finally:
            for client in made.clients.values():
                client.close()


def run_timers(database: Database, now: dt.datetime | None = None) -> None:
    """What a worker's timer thread does once: every tick listener, each in its own
    transaction (found through the `grantflow.engine_listeners` entry points)."""
    listeners = hooks.tick_listeners()
    assert review_listeners.close_ended_reviews in listeners
    assert review_listeners.remind_reviewers in listeners
    queue = DatabaseQueue(database)
    for listener in listeners:
        with database.transaction() as session:
            listener(session, queue, now or utcnow())


def move_end(database: Database, review_id: str, ends_at: dt.datetime) -> None:
    with database.transaction() as session:
        session.execute(
            update(AccessReview).where(AccessReview.id == review_id).values(ends_at=ends_at)
        )


def revoke_workflow(app_id: str) -> dict[str, Any]:
    return {
        "name": "Directory revoke",
        "application": app_id,
        "trigger": {"type": "access_revoked"},
        "steps": [
            {
                "id": "delete",
                "type": "scim.delete_user",
                "config": {"connection": "directory", "user_name": "{{ identity.email }}"},
            }
        ],
    }


def user_names(tenant: Tenant) -> set[str]:
    return {u.user_name for u in tenant.users()}


def test_a_manager_campaign_revokes_in_the_target_and_defaults_at_close(
    database: Database, tmp_path: Path, scim_server: ScimServer
) -> None:
    tenant = scim_server.tenant()
    with world(database, tmp_path) as w:
        mona = w.user("mona", Role.APPROVER)  # the manager, and under review herself
        fay = w.user("fay", Role.APPROVER)  # the fallback reviewer
        olly = w.user("olly", Role.OPERATOR)  # may decide tasks, but reviews nothing here
        viewer = w.user("vic", Role.VIEWER)

        app_id = make_application(w.admin, "Directory")
        connection = make_connection(
            w.admin, app_id, tenant.url, name="directory", kind="scim", auth_kind="bearer"
        )
        put_credential(w.admin, connection["id"], {"token": TOKEN})
        publish(w.admin, revoke_workflow(app_id))
        manager = w.person("mona")
        people = {
            "ada": w.person("ada", manager=manager["id"], department="Research"),
            "bob": w.person("bob", manager=manager["id"], department="Research"),
            "cy": w.person("cy", department="Research"),  # no manager: the fallback
            "mona": manager,
        }
        grants = {name: w.grant(p, "Directory") for name, p in people.items()}
        for name in people:
            tenant.create("User", {"userName": email(name), "active": True})
        assert user_names(tenant) == {email(n) for n in people}

        config = {
            "name": "Directory Q1",
            "scope": {"applications": ["Directory"]},
            "reviewer": "manager",
            "fallback": {"users": [email("fay")]},
            "duration": "P14D",
            "remind_before": "2d",
            "default_decision": "revoke",
            "require_justification_for_keep": True,
        }
        refused = error(viewer.post(f"{API}/reviews", json=config), 403)
        assert refused["missing_permission"] == "job:manage"
        assert "job:manage" in refused["message"]

        review = ok(w.admin.post(f"{API}/reviews", json=config), 201)
        review_id = review["id"]
        assert review["status"] == "open"
        assert review["default_decision"] == "revoke"
        assert review["remind_before"] == "2d"
        ends = dt.datetime.fromisoformat(review["ends_at"])
        starts = dt.datetime.fromisoformat(review["starts_at"])
        assert ends - starts == dt.timedelta(days=14)
        assert review["progress"] == {
            "total": 4,
            "decided": 0,
            "keep": 0,
            "revoke": 0,
            "pending": 4,
            "defaulted": 0,
            "fallback": 2,
            "unassigned": 0,
            "percent": 0.0,
            "revocations_pending": 0,
        }

        items = w.by_identity(review_id)
        for name in ("ada", "bob"):
            assert items[email(name)]["reviewers"] == [email("mona")]
            assert items[email(name)]["reviewer_source"] == "manager"
            assert items[email(name)]["routing_problem"] is None
        for name in ("cy", "mona"):
            assert items[email(name)]["reviewers"] == [email("fay")]
            assert items[email(name)]["reviewer_source"] == "fallback"
            problem = items[email(name)]["routing_problem"]
            assert f"identity {email(name)} has no manager" in problem
            assert "routed to the fallback reviewer" in problem

        # each reviewer is told once, addressed to them
        for client, count in ((mona, 2), (fay, 2)):
            [note] = [n for n in w.notifications(client) if n["target_type"] == "access_review"]
            assert note["kind"] == "task_assigned"
            assert note["target_id"] == review_id
            assert note["data"]["items"] == count
            assert f"{count} grant(s) to review" in note["title"]
        assert not [n for n in w.notifications(olly) if n["target_type"] == "access_review"]

        # the inbox holds what each may decide: never one's own access
        inbox = ok(mona.get(f"{API}/reviews/inbox"))["items"]
        assert {i["identity"]["email"] for i in inbox} == {email("ada"), email("bob")}
        assert all(i["can_decide"] for i in inbox)
        inbox = ok(fay.get(f"{API}/reviews/inbox"))["items"]
        assert {i["identity"]["email"] for i in inbox} == {email("cy"), email("mona")}
        mine = w.items(review_id, mona, pending=True, mine=True)
        assert {i["identity"]["email"] for i in mine} == {email("ada"), email("bob")}
        assert ok(olly.get(f"{API}/reviews/inbox"))["items"] == []

        # who may decide
        refused = error(w.decide(olly, items[email("ada")], "revoke"), 403)
        assert refused["code"] == "not_reviewer"
        assert f"it is assigned to {email('mona')} (the identity's manager)" in refused["message"]
        refused = error(w.decide(viewer, items[email("ada")], "revoke"), 403)
        assert refused["missing_permission"] == "workflow:task"
        refused = error(w.decide(mona, items[email("mona")], "keep", "I need it"), 403)
        assert refused["code"] == "own_access"
        assert "cannot review their own access" in refused["message"]
        assert error(w.decide(mona, items[email("bob")], "keep"), 422)["details"] == [
            {"field": "body.comment", "message": "a justification is required"}
        ]

        # a revoke revokes the grant at once; its workflow removes the account
        decided = ok(w.decide(mona, items[email("ada")], "revoke", "moved to another team"))
        assert decided["decision"] == "revoke"
        assert decided["decided_by"] == email("mona")
        assert decided["revoked"] is True
        assert decided["grant_status"] == "revoked"
        again = error(w.decide(mona, items[email("ada")], "keep", "oops"), 409)
        assert again["code"] == "already_decided"
        assert "already decided: revoke by mona@example.com" in again["message"]
        ok(w.decide(mona, items[email("bob")], "keep", "still on the project"))
        ok(w.decide(fay, items[email("cy")], "keep", "contract renewed"))

        ada = w.shown_grant(grants["ada"])
        assert ada["status"] == "revoked"
        assert ada["revoke_reason"] == "review"
        assert ada["revoked_by"] == email("mona")
        assert "Directory Q1" in ada["revoke_comment"]
        [ada_run] = ada["automation"]["runs"]
        assert w.shown_grant(grants["bob"])["status"] == "active"

        progress = w.review(review_id)["progress"]
        assert (progress["decided"], progress["keep"], progress["revoke"]) == (3, 2, 1)
        assert (progress["pending"], progress["percent"]) == (1, 75.0)
        # mona has decided all hers: her assignment notification is resolved
        [note] = [n for n in w.notifications(mona) if n["target_type"] == "access_review"]
        assert note["resolved_at"] is not None

        with connection_worker(w.settings, database):
            wait_status(database, ada_run["id"], "succeeded")
        assert user_names(tenant) == {email(n) for n in ("bob", "cy", "mona")}

        # closing: the undecided item (mona's own) gets the default, revoke
        refused = error(viewer.post(f"{API}/reviews/{review_id}/close"), 403)
        assert refused["missing_permission"] == "job:manage"
        closed = ok(w.admin.post(f"{API}/reviews/{review_id}/close"))
        assert closed["status"] == "closed"
        assert closed["closed_by"] == email("admin")
        assert closed["progress"] == {
            "total": 4,
            "decided": 4,
            "keep": 2,
            "revoke": 2,
            "pending": 0,
            "defaulted": 1,
            "fallback": 2,
            "unassigned": 0,
            "percent": 100.0,
            "revocations_pending": 0,
        }
        assert error(w.admin.post(f"{API}/reviews/{review_id}/close"), 409)["code"] == (
            "review_closed"
        )
        defaulted = w.by_identity(review_id)[email("mona")]
        assert defaulted["decision"] == "revoke"
        assert defaulted["defaulted"] is True
        assert defaulted["decided_by"] == "system:access-review"
        assert defaulted["revoked"] is True
        mona_grant = w.shown_grant(grants["mona"])
        assert (mona_grant["status"], mona_grant["revoke_reason"]) == ("revoked", "review")
        with connection_worker(w.settings, database):
            wait_status(database, mona_grant["automation"]["runs"][0]["id"], "succeeded")
        assert user_names(tenant) == {email("bob"), email("cy")}
        assert ok(fay.get(f"{API}/reviews/inbox"))["items"] == []
        assert all(
            n["resolved_at"] is not None
            for n in w.notifications(fay)
            if n["target_type"] == "access_review"
        )

        # the report: every item, who decided, when, and why
        rows = {r["identity_email"]: r for r in w.report(review_id)}
        assert set(rows) == {email(n) for n in people}
        assert rows[email("ada")]["decision"] == "revoke"
        assert rows[email("ada")]["decided_by"] == email("mona")
        assert rows[email("ada")]["reviewers"] == email("mona")
        assert rows[email("ada")]["comment"] == "moved to another team"
        assert rows[email("ada")]["revoked"] == "true"
        assert rows[email("ada")]["decided_at"].startswith(str(utcnow().year))
        assert rows[email("cy")]["reviewer_source"] == "fallback"
        assert rows[email("cy")]["reviewers"] == email("fay")
        assert rows[email("cy")]["comment"] == "contract renewed"
        assert rows[email("mona")]["defaulted"] == "true"
        assert rows[email("mona")]["decided_by"] == "system:access-review"
        assert rows[email("bob")]["application"] == "Directory"
        assert all(r["decided_at"] for r in rows.values())

        # the audit trail: started, each decision, closed
        entries = w.audit(review_id)
        actions = [(e["action"], e["actor"]) for e in reversed(entries)]
        assert actions == [
            ("access_review.started", email("admin")),
            ("access_review.decided", email("mona")),
            ("access_review.decided", email("mona")),
            ("access_review.decided", email("fay")),
            ("access_review.closed", email("admin")),
        ]
        first = next(e for e in reversed(entries) if e["action"] == "access_review.decided")
        assert first["summary"]["decision"] == "revoke"
        assert first["summary"]["identity"] == email("ada")
        assert first["summary"]["revoked"] is True
        assert entries[0]["summary"]["defaulted"] == 1


def test_an_owner_campaign_never_routes_own_access_and_closes_itself_with_keep(
    database: Database, tmp_path: Path
) -> None:
    """Reviewer application_owner, where the owner also has a grant: that item goes to the
    fallback role at creation; reminders go once to each reviewer with pending items; when
    its end passes, the worker timer closes it and undecided items are kept."""
    with world(database, tmp_path) as w:
        olivia = w.user("olivia", Role.APPROVER)  # owns the Wiki
        fay = w.user("fay", Role.APPROVER)
        app = ok(
            w.admin.post(
                f"{API}/applications", json={"name": "Wiki", "owner_id": w.user_id("olivia")}
            ),
            201,
        )
        make_application(w.admin, "Payroll")  # out of scope
        people = {
            "olivia": w.person("olivia", department="Docs"),
            "dan": w.person("dan", department="Docs"),
            "eve": w.person("eve", department="Sales"),  # filtered out by department
        }
        grants = {name: w.grant(p, "Wiki") for name, p in people.items()}
        w.grant(people["dan"], "Payroll")

        review = ok(
            w.admin.post(
                f"{API}/reviews",
                json={
                    "name": "Wiki owners",
                    "scope": {"applications": [app["id"]], "identity": {"department": "docs"}},
                    "reviewer": "application_owner",
                    "fallback": {"roles": ["approver"]},
                    "duration": "1h",
                    "remind_before": "30m",
                    "default_decision": "keep",
                },
            ),
            201,
        )
        review_id = review["id"]
        items = w.by_identity(review_id)
        assert set(items) == {email("olivia"), email("dan")}
        assert items[email("dan")]["reviewers"] == [email("olivia")]
        assert items[email("dan")]["reviewer_source"] == "owner"
        own = items[email("olivia")]
        assert own["reviewers"] == ["role:approver"]
        assert own["reviewer_source"] == "fallback"
        assert own["routing_problem"] == (
            "the owner of Wiki olivia@example.com is the identity under review "
            "(no one reviews their own access): routed to the fallback reviewer"
        )
        # olivia holds the fallback role, but it is her own access
        refused = error(w.decide(olivia, own, "keep"), 403)
        assert refused["code"] == "own_access"
        assert {i["identity"]["email"] for i in ok(fay.get(f"{API}/reviews/inbox"))["items"]} == {
            email("olivia")
        }

        # not yet within remind_before: nothing; then once, to each reviewer
        run_timers(database)
        assert w.review(review_id)["reminded_at"] is None
        move_end(database, review_id, utcnow() + dt.timedelta(minutes=10))
        run_timers(database)
        run_timers(database)
        assert w.review(review_id)["reminded_at"] is not None
        for client, count in ((olivia, 1), (fay, 1)):
            reminders = [n for n in w.notifications(client) if n["data"].get("reminder")]
            assert len(reminders) == 1
            assert reminders[0]["target_id"] == review_id
            assert f"{count} grant(s) still wait for your decision" in reminders[0]["title"]

        move_end(database, review_id, utcnow() - dt.timedelta(seconds=1))
        run_timers(database)
        shown = w.review(review_id)
        assert shown["status"] == "closed"
        assert shown["closed_by"] == "system:access-review"
        assert shown["progress"]["keep"] == shown["progress"]["defaulted"] == 2
        assert shown["progress"]["percent"] == 100.0
        for name in ("olivia", "dan"):
            assert w.shown_grant(grants[name])["status"] == "active"
            row = w.by_identity(review_id)[email(name)]
            assert (row["decision"], row["defaulted"], row["revoked"]) == ("keep", True, False)
            assert "its end passed" in row["comment"]
        refused = error(w.decide(olivia, items[email("dan")], "revoke"), 409)
        assert refused["code"] == "review_closed"
        actions = [e["action"] for e in reversed(w.audit(review_id))]
        assert actions == [
            "access_review.started",
            "access_review.reminded",
            "access_review.closed",
        ]


def test_a_scheduled_access_review_job_starts_a_campaign_per_occurrence(
    database: Database, tmp_path: Path
) -> None:
    with world(database, tmp_path) as w:
        w.user("fay", Role.APPROVER)
        make_application(w.admin, "Wiki")
        ada = w.person("ada")
        w.grant(ada, "Wiki")
        config = {
            "name": "Quarterly Wiki review",
            "scope": {"applications": ["Wiki"]},
            "reviewer": "users",
            "users": [email("fay")],
            "fallback": {"roles": ["admin"]},
            "duration": "14d",
        }
        with database.transaction() as session, pytest.raises(ValidationError) as refused:
            jobs.create_built_in(
                session,
                ACTOR,
                jobs.BuiltInJobCreate(
                    name="Broken",
                    kind="access_review",
                    cron="0 9 1 1,4,7,10 *",
                    config={**config, "fallback": {}},
                ),
            )
        assert refused.value.details[0]["field"] == "body.config.fallback"
        with database.transaction() as session:
            job = jobs.create_built_in(
                session,
                ACTOR,
                jobs.BuiltInJobCreate(
                    name="Quarterly review",
                    kind="access_review",
                    cron="0 9 1 1,4,7,10 *",
                    config=config,
                ),
            )
            job_id = job.id
        with database.transaction() as session:
            occurrence = scheduler.run_now(session, ACTOR, DatabaseQueue(database), job_id)
            result = (occurrence.result_type, occurrence.result_id, occurrence.outcome)
            scheduled_for = occurrence.scheduled_for
        assert result[0] == "access_review"
        assert result[2] == "succeeded"
        [review] = ok(w.admin.get(f"{API}/reviews", params={"job_id": job_id}))["items"]
        assert review["id"] == result[1]
        assert review["name"] == f"Quarterly Wiki review {scheduled_for:%Y-%m-%d}"
        assert review["created_by"] == "system:scheduler"
        [item] = w.items(review["id"])
        assert (item["identity"]["email"], item["reviewers"]) == (email("ada"), [email("fay")])
        assert item["reviewer_source"] == "named"

        # the application is gone from the config's world: the occurrence fails, saying why
        with database.transaction() as session:
            jobs.update_job(
                session,
                ACTOR,
                job_id,
                jobs.JobUpdate(config={**config, "scope": {"applications": ["Gone"]}}),
            )
        with database.transaction() as session:
            failed = scheduler.run_now(session, ACTOR, DatabaseQueue(database), job_id)
            assert failed.outcome == "failed"
            assert "no application with id or name 'Gone'" in (failed.reason or "")
        assert len(ok(w.admin.get(f"{API}/reviews", params={"job_id": job_id}))["items"]) == 1


def test_config_errors_name_the_field(database: Database, tmp_path: Path) -> None:
    with world(database, tmp_path) as w:
        base = {"name": "R", "reviewer": "manager", "fallback": {"users": [email("fay")]}}
        cases = [
            ({**base, "fallback": {}}, "body.fallback"),
            ({**base, "reviewer": "users"}, "body"),
            ({**base, "duration": "soon"}, "body.duration"),
            ({**base, "colour": "red"}, "body.colour"),
            ({**base, "fallback": {"roles": ["viewer"]}}, "body.fallback.roles"),
            ({**base, "scope": {"applications": ["Nope"]}}, "body.scope.applications.0"),
        ]
        for body, field in cases:
            details = error(w.admin.post(f"{API}/reviews", json=body), 422)["details"]
            assert details[0]["field"] == field, (body, details)
        assert ok(w.admin.get(f"{API}/reviews"))["items"] == []
        assert error(w.admin.get(f"{API}/reviews/nope"), 404)["code"] == "not_found"
        # nothing in scope: a campaign recorded as closed at once
        empty = ok(w.admin.post(f"{API}/reviews", json=base), 201)
        assert (empty["status"], empty["closed_by"]) == ("closed", "system:access-review")
        assert (empty["progress"]["total"], empty["progress"]["percent"]) == (0, 100.0)


def test_the_cli_starts_decides_and_reports(database: Database, tmp_path: Path) -> None:
    with world(database, tmp_path) as w:
        w.user("rita", Role.APPROVER)
        w.user("olly", Role.OPERATOR)
        make_application(w.admin, "Wiki")
        dan = w.grant(w.person("dan"), "Wiki")
        config = tmp_path / "review.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "name": "CLI review",
                    "reviewer": "users",
                    "users": [email("rita")],
                    "fallback": {"users": [email("olly")]},
                    "duration": "7d",
                    "require_justification_for_keep": True,
                }
            )
        )
        started = json_output(w.cli("reviews", "start", "-f", str(config), "--json"))
        assert started["progress"]["total"] == 1
        [item] = json_output(
            w.cli("reviews", "items", started["id"], "--mine", "--as", email("rita"), "--json")
        )
        assert item["can_decide"] is True
        refused = w.cli("reviews", "decide", item["id"], "keep", "--as", email("olly"))
        assert refused.returncode == 1
        assert "is not a reviewer of item" in refused.stderr
        decided = json_output(
            w.cli(
                "reviews",
                "decide",
                item["id"],
                "revoke",
                "--as",
                email("rita"),
                "-m",
                "=gone",
                "--json",
            )
        )
        assert (decided["decision"], decided["revoked"]) == ("revoke", True)
        assert w.shown_grant(dan)["revoke_reason"] == "review"
        shown = json_output(w.cli("reviews", "close", started["id"], "--json"))
        assert shown["status"] == "closed"
        report = tmp_path / "report.csv"
        wrote = w.cli("reviews", "report", started["id"], "--csv", str(report))
        assert wrote.returncode == 0, wrote.stderr
        [row] = list(csv.DictReader(io.StringIO(report.read_text())))
        assert (row["decision"], row["decided_by"]) == ("revoke", email("rita"))
        assert row["comment"] == "'=gone"  # never a formula in a spreadsheet
