"""The console's home, inbox and run pages over HTTP (no browser): each page and action
declares the permission its API route declares; a user who lacks it (or whom the service
refuses) gets a 403 page, and a forged POST is audited; a reader sees no action; a task form's
errors come back next to their fields; an e-mail link of the API opened in a browser lands on
its console page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import select

from grantflow.access.grants import GrantCreate, create_grant
from grantflow.access.identities import IdentityCreate, create_identity
from grantflow.api import create_app
from grantflow.api.app import api_routes, route_guard
from grantflow.api.security import Require
from grantflow.audit.models import AuditEntry
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission, Role
from grantflow.auth.users import create_user
from grantflow.config import Settings
from grantflow.console.guard import Page
from grantflow.console.presenters import attention
from grantflow.engine.models import Run
from grantflow.people.models import Task
from grantflow.queue.database import DatabaseQueue
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.console import signed_in_client
from tests.support.engine import ACTOR, publish, running_worker, wait_status, workflow
from tests.support.ops import (
    approval_workflow,
    attention_world,
    failing_workflow,
    http_step,
    set_step,
    start_run,
    task_workflow,
    waiting_task,
)
from tests.support.provisioning import make_application
from tests.support.target import Reply, running_target

# each console route added for operators and approvers, and the API route doing the same thing
SAME_AS_API = {
    ("GET", "/inbox"): ("GET", "/api/v1/inbox"),
    ("GET", "/inbox/{task_id}"): ("GET", "/api/v1/tasks/{task_id}"),
    ("POST", "/inbox/{task_id}/reassign"): ("POST", "/api/v1/tasks/{task_id}/reassign"),
    ("POST", "/inbox/{task_id}/{action}"): ("POST", "/api/v1/tasks/{task_id}/{action}"),
    ("GET", "/links/{token}"): ("GET", "/api/v1/links/{token}"),
    ("POST", "/links/{token}"): ("POST", "/api/v1/links/{token}"),
    ("GET", "/runs"): ("GET", "/api/v1/runs"),
    ("GET", "/runs/{run_id}"): ("GET", "/api/v1/runs/{run_id}"),
    ("GET", "/runs/{run_id}/live"): ("GET", "/api/v1/runs/{run_id}"),
    ("GET", "/runs/{run_id}/steps"): ("GET", "/api/v1/runs/{run_id}/steps"),
    ("GET", "/runs/{run_id}/timeline"): ("GET", "/api/v1/runs/{run_id}/events"),
    ("POST", "/runs/{run_id}/retry"): ("POST", "/api/v1/runs/{run_id}/retry"),
    ("POST", "/runs/{run_id}/replay"): ("POST", "/api/v1/runs/{run_id}/replay"),
    ("POST", "/runs/{run_id}/replay-latest"): ("POST", "/api/v1/runs/{run_id}/replay"),
    ("POST", "/runs/{run_id}/cancel"): ("POST", "/api/v1/runs/{run_id}/cancel"),
    ("POST", "/runs/{run_id}/pause"): ("POST", "/api/v1/runs/{run_id}/pause"),
    ("POST", "/runs/{run_id}/resume"): ("POST", "/api/v1/runs/{run_id}/resume"),
    ("POST", "/runs/{run_id}/dispatch-grant"): ("POST", "/api/v1/grants/{grant_id}/dispatch"),
}
RUN_ACTIONS = ("retry", "replay", "replay-latest", "cancel", "pause", "resume", "dispatch-grant")
POST_FORM = re.compile(r'<form method="post" action="(/(?:runs|inbox|links)/[^"]+)"')


@dataclass
class Ops:
    api: Api
    settings: Settings

    def client(self, email: str, *roles: Role) -> tuple[httpx.Client, str]:
        with self.api.database.transaction() as session:
            create_user(session, Actor.system("test"), email=email, roles=list(roles))
        return signed_in_client(self.api.base_url, self.api.database, self.settings, email)


@pytest.fixture
def ops(api: Api, settings: Settings) -> Iterator[Ops]:
    with running_worker(api.database):
        yield Ops(api, settings)


def forbidden_entry(ops: Ops, email: str, path: str) -> AuditEntry:
    with ops.api.database.transaction() as session:
        entry: AuditEntry = session.execute(
            select(AuditEntry).where(
                AuditEntry.action == "console.forbidden",
                AuditEntry.actor == email,
                AuditEntry.target_id == path,
            )
        ).scalar_one()
        session.expunge(entry)
        return entry


def test_each_page_declares_the_permission_of_its_api_route(settings: Settings, api: Api) -> None:
    """Every console route of the inbox, e-mail links and runs is guarded by a Page with the
    same permission as the API route doing the same thing (dispatching a grant: grant:write)."""
    app = create_app(settings, api.database)
    guards: dict[tuple[str, str], object] = {}
    for route in api_routes(app):
        for method in route.methods or ():
            guards[(method, route.path)] = route_guard(route)
    for console_route, api_route in SAME_AS_API.items():
        page, required = guards[console_route], guards[api_route]
        assert isinstance(page, Page), console_route
        assert isinstance(required, Require), api_route
        assert page.permission == required.permission, (console_route, api_route)


def test_reader_sees_the_pages_but_no_action(ops: Ops) -> None:
    """A viewer opens the home page, the inbox, the runs list, a failed run, its live part and
    a pending task: every page answers 200 in words, and none holds a form that acts; a
    moving run's live part answers 204 while nothing changed."""
    db = ops.api.database
    with running_target() as target:
        target.on("/accounts", Reply(503))
        failed = start_run(db, failing_workflow(db, f"{target.url}/accounts"))
        wait_status(db, failed, "failed")
    waiting = start_run(db, approval_workflow(db))
    task_id = waiting_task(db, waiting)
    viewer, _ = ops.client("viewer@example.com", Role.VIEWER)
    with viewer:
        for path in (
            "/",
            "/inbox",
            "/runs",
            f"/runs/{failed}",
            f"/runs/{failed}/live",
            f"/runs/{failed}/steps",
            f"/runs/{failed}/timeline",
            f"/inbox/{task_id}",
            f"/runs/{waiting}",
            "/runs?status=failed",
        ):
            response = viewer.get(path)
            assert response.status_code == 200, (path, response.text)
            assert "Traceback" not in response.text
            assert not POST_FORM.findall(response.text), (path, POST_FORM.findall(response.text))
        shown = viewer.get(f"/runs/{failed}").text
        assert "Why it failed" in shown
        assert "503" in shown
        assert "Retry the run" in shown  # the advice's words, but no button
        assert "data-operation=" not in shown
        assert f"/runs/{failed}" in viewer.get("/").text  # the home page lists the failed run
        # a moving run's page polls its live part, answered 204 while nothing changed; an
        # ended run's page does not poll
        live = re.search(r'hx-get="(/runs/[^"]+/live\?v=\w+)"', viewer.get(f"/runs/{waiting}").text)
        assert live is not None
        assert viewer.get(live.group(1)).status_code == 204
        assert 'hx-trigger="every' not in shown


def test_run_actions_refuse_a_reader_with_a_403_page_and_audit_it(ops: Ops) -> None:
    """Each run operation POSTed by a viewer with a valid CSRF token is a 403 page naming the
    permission, changes nothing, and leaves a console.forbidden audit entry."""
    db = ops.api.database
    run_id = start_run(db, approval_workflow(db))
    waiting_task(db, run_id)
    viewer, token = ops.client("viewer@example.com", Role.VIEWER)
    with viewer:
        for action in RUN_ACTIONS:
            path = f"/runs/{run_id}/{action}"
            response = viewer.post(path, data={"csrf_token": token, "force": "true"})
            assert response.status_code == 403, (action, response.text)
            assert "needs the permission" in response.text
            entry = forbidden_entry(ops, "viewer@example.com", path)
            assert entry.summary["method"] == "POST"
    wait_status(db, run_id, "waiting")


def test_inbox_actions_refused_by_the_service_are_403_and_audited(ops: Ops) -> None:
    """A viewer approving, and an approver retrying an approval or reassigning it, are refused
    with a 403 page in words; each refusal is audited; the task stays pending."""
    db = ops.api.database
    run_id = start_run(db, approval_workflow(db))
    task_id = waiting_task(db, run_id)
    viewer, viewer_token = ops.client("viewer@example.com", Role.VIEWER)
    approver, approver_token = ops.client("approver@example.com", Role.APPROVER)
    with viewer, approver:
        approve = f"/inbox/{task_id}/approve"
        refused = viewer.post(approve, data={"csrf_token": viewer_token})
        assert refused.status_code == 403
        assert "This action needs the permission workflow:task." in refused.text
        assert forbidden_entry(ops, "viewer@example.com", approve).summary["method"] == "POST"
        reassign = f"/inbox/{task_id}/reassign"
        refused = approver.post(reassign, data={"csrf_token": approver_token, "roles": "admin"})
        assert refused.status_code == 403
        assert "task:reassign" in refused.text
        assert forbidden_entry(ops, "approver@example.com", reassign)
        # the page shows no decision form to the viewer, and the approver's form
        assert f'action="/inbox/{task_id}/approve"' not in viewer.get(f"/inbox/{task_id}").text
        assert f'action="/inbox/{task_id}/approve"' in approver.get(f"/inbox/{task_id}").text
    with db.transaction() as session:
        assert session.get(Task, task_id).status == "pending"  # type: ignore[union-attr]


def test_task_form_errors_come_back_next_to_their_fields(ops: Ops) -> None:
    """Submitting a task's form with a ticket not matching its pattern, seats below the
    minimum and no ticket at all shows the task again (422) with each problem next to its
    input; nothing is recorded; good data submits it and the run succeeds."""
    db = ops.api.database
    run_id = start_run(db, task_workflow(db))
    task_id = waiting_task(db, run_id)
    approver, token = ops.client("approver@example.com", Role.APPROVER)
    with approver:
        page = approver.get(f"/inbox/{task_id}").text
        for name in ("data.ticket", "data.seats", "data.site", "data.urgent"):
            assert f'name="{name}"' in page
        bad = approver.post(
            f"/inbox/{task_id}/submit",
            data={"csrf_token": token, "data.ticket": "x", "data.seats": "0", "back": "/inbox"},
        )
        assert bad.status_code == 422
        ticket = bad.text.split('id="field-ticket-help"')[1].split("</div>")[0]
        assert "does not match" in ticket
        seats = bad.text.split('id="field-seats-help"')[1].split("</div>")[0]
        assert "less than the minimum of 1" in seats
        assert 'value="x"' in bad.text  # what was typed is kept
        missing = approver.post(f"/inbox/{task_id}/submit", data={"csrf_token": token})
        assert missing.status_code == 422
        ticket = missing.text.split('id="field-ticket-help"')[1].split("</div>")[0]
        assert "&#39;ticket&#39; is a required property" in ticket
        good = approver.post(
            f"/inbox/{task_id}/submit",
            data={
                "csrf_token": token,
                "data.ticket": "INC-42",
                "data.seats": "3",
                "data.site": '"Paris"',
                "data.urgent": "true",
                "back": "/inbox",
            },
            follow_redirects=False,
        )
        assert good.status_code == 303, good.text
        assert good.headers["location"] == "/inbox"
    wait_status(db, run_id, "succeeded")
    with db.transaction() as session:
        task = session.get(Task, task_id)
        assert task is not None
        assert task.output == {"ticket": "INC-42", "seats": 3, "site": "Paris", "urgent": True}


def test_an_api_link_opened_in_a_browser_lands_on_its_console_page(api: Api) -> None:
    """An e-mail link of the API (/api/v1/links/<token>) opened in a browser (HTML wanted, no
    token) redirects to /links/<token>; an API client still gets 401 JSON."""
    with api.client() as client:
        browser = client.get(
            "/api/v1/links/abc.def", headers={"Accept": "text/html"}, follow_redirects=False
        )
        assert browser.status_code == 303
        assert browser.headers["location"] == "/links/abc.def"
        assert client.get("/api/v1/links/abc.def").status_code == 401


def test_home_sections_follow_the_permissions_of_their_api_routes(database: Database) -> None:
    """The home page's sections are those the user may read: `self` alone shows only what
    waits on me; run:read adds failed and stuck runs; connection:read, job:read and
    incident:read add theirs — each listing what the world holds, with links to it."""
    with running_target() as target, running_worker(database):
        world = attention_world(database, target)
    with database.transaction() as session:
        admin = create_user(
            session, Actor.system("test"), email="a@example.com", roles=[Role.ADMIN]
        )

        def keys(*held: Permission) -> dict[str, list[str]]:
            shown = attention.sections(session, admin, lambda p: p in held)
            return {s.key: [i.url for i in s.items] for s in shown}

        assert keys(Permission.SELF) == {"waiting": [f"/inbox/{world.task}"]}
        assert set(keys(Permission.SELF, Permission.RUN_READ)) == {"waiting", "failed", "stuck"}
        everything = keys(*Permission)
        assert everything["failed"] == [f"/runs/{world.failed_run}"]
        assert everything["connections"] == [f"/connections/{world.connection}"]
        assert everything["jobs"] == [f"/jobs/{world.job}"]
        assert everything["incidents"] == [f"/incidents/{world.incident}"]
        assert everything["controls"] == ["/controls"]
        assert everything["stuck"] == []
        assert set(keys(Permission.INCIDENT_READ)) == {"incidents"}


def test_an_escalated_failure_is_retried_from_the_operators_inbox(ops: Ops) -> None:
    """A step that exhausted its attempts with on_failure: escalate shows in an operator's
    inbox with Retry / Skip / Fail and the failure, not in an approver's; once the target is
    back, Retry from the console resumes the run to success."""
    db = ops.api.database
    with running_target() as target:
        target.on("/accounts", Reply(503))
        step = http_step(
            "create_account",
            f"{target.url}/accounts",
            retry={"max_attempts": 1},
            on_failure="escalate",
        )
        run_id = start_run(db, publish(db, workflow("Escalating", step, set_step())))
        task_id = waiting_task(db, run_id)
        operator, token = ops.client("operator@example.com", Role.OPERATOR)
        approver, _ = ops.client("approver@example.com", Role.APPROVER)
        with operator, approver:
            shown = operator.get("/inbox?kind=escalation").text
            assert "escalated failure" in shown
            assert "HTTP 503" in shown
            for action in ("retry", "skip", "fail"):
                assert f'formaction="/inbox/{task_id}/{action}"' in shown
            assert task_id not in approver.get("/inbox").text
            failed = operator.post(f"/inbox/{task_id}/fail", data={"csrf_token": token})
            assert failed.status_code == 422  # failing the run needs a reason
            assert "say why the run should fail" in failed.text
            target.on("/accounts", Reply(201, {"id": "a-1"}))
            retried = operator.post(
                f"/inbox/{task_id}/retry", data={"csrf_token": token}, follow_redirects=False
            )
            assert retried.status_code == 303, retried.text
    wait_status(db, run_id, "succeeded")


def test_a_task_is_reassigned_from_its_page(ops: Ops) -> None:
    """An operator (task:reassign) reassigns an approval to a named approver: the page says
    so, the new approver sees it in their inbox; an unknown user is refused in words on the
    task page, next to the users input."""
    db = ops.api.database
    run_id = start_run(db, approval_workflow(db))
    task_id = waiting_task(db, run_id)
    operator, token = ops.client("operator@example.com", Role.OPERATOR)
    other, _ = ops.client("other@example.com", Role.APPROVER)
    with operator, other:
        unknown = operator.post(
            f"/inbox/{task_id}/reassign", data={"csrf_token": token, "users": "nobody@x.org"}
        )
        assert unknown.status_code == 422
        assert "user &#39;nobody@x.org&#39; does not exist" in unknown.text
        assert '<details class="reassign" open>' in unknown.text
        done = operator.post(
            f"/inbox/{task_id}/reassign",
            data={"csrf_token": token, "users": "other@example.com", "comment": "Grace is away"},
            follow_redirects=True,
        )
        assert done.status_code == 200  # followed to the task page
        assert "Reassigned to other@example.com" in done.text
        assert f"/inbox/{task_id}" in other.get("/inbox").text


def test_a_refused_replay_with_latest_offers_dispatch_which_starts_a_new_run(ops: Ops) -> None:
    """Replay with latest of a grant's run whose non-reversible call acted is refused on the run
    page in words (409), with Dispatch as the button that works; Dispatch starts a new run of
    the grant's workflow, and the page goes to it."""
    db = ops.api.database
    with running_target() as target:
        target.on("/accounts", Reply(201, {"id": "a-1"}))
        app_id = make_application(db, "Wiki")
        document = {
            "name": "Wiki grant",
            "application": app_id,
            "trigger": {"type": "access_granted"},
            "steps": [http_step("create_account", f"{target.url}/accounts")],
        }
        publish(db, document)
        queue = DatabaseQueue(db)
        with db.transaction() as session:
            create_identity(session, ACTOR, queue, IdentityCreate(email="ada@example.com"))
            data = GrantCreate(identity="ada@example.com", application="Wiki")
            create_grant(session, ACTOR, queue, data)
        with db.transaction() as session:
            run_id = session.execute(select(Run.id)).scalar_one()
        wait_status(db, run_id, "succeeded")
        operator, token = ops.client("operator@example.com", Role.OPERATOR)
        with operator:
            refused = operator.post(f"/runs/{run_id}/replay-latest", data={"csrf_token": token})
            assert refused.status_code == 409
            assert "Replay with latest is refused" in refused.text
            assert "then Dispatch the grant" in refused.text
            assert f'<form method="post" action="/runs/{run_id}/dispatch-grant"' in refused.text
            dispatched = operator.post(
                f"/runs/{run_id}/dispatch-grant",
                data={"csrf_token": token},
                follow_redirects=False,
            )
            assert dispatched.status_code == 303, dispatched.text
            new_run = dispatched.headers["location"].removeprefix("/runs/")
            assert new_run != run_id
            wait_status(db, new_run, "succeeded")


def test_pause_then_resume_from_the_run_page(ops: Ops) -> None:
    """An operator pauses a waiting run: the page says who paused it and offers Resume (not
    Pause); Resume puts it back to waiting on its approval. Cancelling it before any step
    acted needs no confirmation."""
    db = ops.api.database
    run_id = start_run(db, approval_workflow(db))
    waiting_task(db, run_id)
    operator, token = ops.client("operator@example.com", Role.OPERATOR)
    with operator:
        page = operator.get(f"/runs/{run_id}").text
        assert f'action="/runs/{run_id}/pause"' in page
        paused = operator.post(
            f"/runs/{run_id}/pause", data={"csrf_token": token}, follow_redirects=True
        )
        assert paused.status_code == 200
        assert "Paused by operator@example.com" in paused.text
        assert f'action="/runs/{run_id}/resume"' in paused.text
        assert f'action="/runs/{run_id}/pause"' not in paused.text
        wait_status(db, run_id, "paused")
        operator.post(f"/runs/{run_id}/resume", data={"csrf_token": token})
        wait_status(db, run_id, "waiting")
        cancelled = operator.post(
            f"/runs/{run_id}/cancel", data={"csrf_token": token}, follow_redirects=True
        )
        assert "Cancelled." in cancelled.text
        assert 'id="run-status">cancelled<' in cancelled.text


def test_the_runs_filter_names_each_bad_value(ops: Ops) -> None:
    """The runs list's filter form: a value that is not a date, a date outside the years the
    API accepts, a bad version or stuck flag: a 422 page naming each next to its field (not a
    500), and no runs listed."""
    viewer, _ = ops.client("filters@example.com", Role.VIEWER)
    with viewer:
        for query, field, said in (
            ("since=yesterday", "since", "a date (2026-01-31) or a date and time"),
            ("since=0001-01-01", "since", "must be between the years 1000 and 9000"),
            ("until=9999-12-31T23:59", "until", "must be between the years 1000 and 9000"),
            ("version=0", "version", "a version number: 1 to 2,147,483,647"),
            # (a digit `int` refuses; a number over the column's range)
            ("version=%C2%B2", "version", "a version number: 1 to 2,147,483,647"),
            ("version=2147483648", "version", "a version number: 1 to 2,147,483,647"),
            ("stuck=maybe", "stuck", "true or false"),
        ):
            response = viewer.get(f"/runs?{query}")
            assert response.status_code == 422, (query, response.text)
            assert said in response.text.lower(), query  # (shown as a sentence)
            assert f'name="{field}"' in response.text
            assert "Traceback" not in response.text
