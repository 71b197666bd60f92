"""Administration actions over real HTTP (no browser): each is audited with the signed-in user,
a refusal comes back in words (message and next action) on the page the form was on, a form's
bad field is named, and a credential typed into the write-only form is never echoed."""

from __future__ import annotations

import datetime as dt
import re

import httpx
import pytest
from sqlalchemy import select, update

from grantflow import audit
from grantflow.access.models import Grant
from grantflow.audit.models import AuditEntry
from grantflow.auth.actor import Actor
from grantflow.auth.models import User
from grantflow.auth.permissions import Role
from grantflow.auth.users import create_user
from grantflow.config import Settings
from grantflow.definitions.models import WorkflowVersion
from grantflow.schedules import jobs, scheduler
from grantflow.store.base import utcnow
from tests.conftest import Api
from tests.support.admin_objects import Seeded, seed
from tests.support.console import signed_in_client


@pytest.fixture
def seeded(api: Api, settings: Settings) -> Seeded:
    return seed(api.database, settings)


def _signed_in(api: Api, settings: Settings, role: Role) -> tuple[httpx.Client, str]:
    email = f"actions-{role}@example.com"
    with api.database.transaction() as session:
        create_user(session, Actor.system("test"), email=email, roles=[role])
    return signed_in_client(api.base_url, api.database, settings, email)


def test_a_grant_made_in_the_console_is_audited_with_the_signed_in_user(
    api: Api, settings: Settings, seeded: Seeded
) -> None:
    """POST /grants (the form) creates the grant through the API's service function: the
    audit entry names the operator, and the answer leads to the new grant's page."""
    client, token = _signed_in(api, settings, Role.OPERATOR)
    with client:
        response = client.post(
            "/grants",
            data={
                "csrf_token": token,
                "identity": "cy@example.com",
                "application": seeded.application_id,
                "role": "viewer",
                "expires_at": "2099-01-31T17:00",
            },
            follow_redirects=False,
        )
        assert response.status_code == 303, response.text
        grant_id = response.headers["location"].rsplit("/", 1)[1]
        page = client.get(response.headers["location"])
        assert "Access granted; 1 run started." in page.text
    with api.database.transaction() as session:
        grant = session.get(Grant, grant_id)
        assert grant is not None
        assert (grant.role, grant.granted_by) == ("viewer", "actions-operator@example.com")
        assert grant.expires_at is not None
        assert grant.expires_at.isoformat().startswith("2099-01-31T17:00")
        entry = session.execute(
            select(AuditEntry).where(
                AuditEntry.action == "grant.created", AuditEntry.target_id == grant_id
            )
        ).scalar_one()
        assert entry.actor == "actions-operator@example.com"


def test_a_refused_action_is_shown_in_words_with_its_next_action(
    api: Api, settings: Settings, seeded: Seeded
) -> None:
    """Dispatch on a grant whose run is still in flight is refused by the service: the grant
    page says why, names the run, and gives the next action; nothing is dispatched."""
    client, token = _signed_in(api, settings, Role.OPERATOR)
    with client:
        response = client.post(
            f"/grants/{seeded.grant_id}/dispatch", data={"csrf_token": token}, follow_redirects=True
        )
        assert response.status_code == 200
        assert str(response.url).endswith(f"/grants/{seeded.grant_id}")
        text = re.sub(r"\s+", " ", response.text)
        assert 'class="flash flash-error"' in text
        assert "already has a run in flight" in text
        assert "Next: " in text
        assert "Traceback" not in text
    with api.database.transaction() as session:
        assert not session.execute(
            select(AuditEntry).where(AuditEntry.action == "grant.dispatched")
        ).all()


def test_a_bad_form_field_is_named(api: Api, settings: Settings, seeded: Seeded) -> None:
    """An expiry that is not a date comes back naming the field; the grant keeps its expiry."""
    client, token = _signed_in(api, settings, Role.OPERATOR)
    with client:
        response = client.post(
            f"/grants/{seeded.grant_id}/extend",
            data={"csrf_token": token, "expires_at": "next tuesday"},
            follow_redirects=True,
        )
        assert response.status_code == 200
        assert "Expires_at: &#39;next tuesday&#39; is not a date and time." in response.text
        assert "Next: enter a date and time such as 2030-01-31 17:00" in response.text
    with api.database.transaction() as session:
        grant = session.get(Grant, seeded.grant_id)
        assert grant is not None
        assert grant.expires_at is None


def test_the_credential_form_never_echoes_what_was_typed(
    api: Api, settings: Settings, seeded: Seeded
) -> None:
    """A credential the service refuses (a field the auth kind does not take, the required
    one missing) answers 422 naming the fields, with empty inputs: the values typed are in no
    part of the page; the stored credential is unchanged."""
    client, token = _signed_in(api, settings, Role.EDITOR)
    typed = "s3cr3t-typed-value-0123456789"
    with client:
        response = client.post(
            f"/connections/{seeded.connection_id}/credential",
            data={"csrf_token": token, "token": "", "client_secret": typed},
        )
        assert response.status_code == 422
        assert "body.token" in response.text
        assert typed not in response.text
        assert 'type="password" name="token" required' in response.text
        good = client.post(
            f"/connections/{seeded.connection_id}/credential",
            data={"csrf_token": token, "token": typed},
            follow_redirects=True,
        )
        assert good.status_code == 200
        assert "The credential is replaced." in good.text
        assert typed not in good.text
    with api.database.transaction() as session:
        entry = session.execute(
            select(AuditEntry).where(AuditEntry.action == "credential.replaced")
        ).scalar_one()
        assert entry.actor == "actions-editor@example.com"
        assert typed not in str(entry.summary)


def test_a_job_page_shows_skipped_occurrences_with_their_reason_and_the_overdue_flag(
    api: Api, settings: Settings, seeded: Seeded
) -> None:
    """A skipped occurrence is listed with its reason; an overdue job says so on its page and
    in the list."""
    now = utcnow()
    with api.database.transaction() as session:
        job = jobs.get_job(session, seeded.job_id)
        scheduler.record(
            session,
            job,
            now - dt.timedelta(days=1),
            "skipped",
            now,
            "the job was paused by ops@example.com",
        )
        job.overdue_since = now - dt.timedelta(minutes=20)
    client, _ = _signed_in(api, settings, Role.VIEWER)
    with client:
        page = re.sub(r"\s+", " ", client.get(f"/jobs/{seeded.job_id}").text)
        listed = client.get("/jobs?overdue=true")
    assert "Overdue since" in page
    assert "skipped" in page
    assert "the job was paused by ops@example.com" in page
    assert "Nightly controls" in listed.text
    assert '<span class="chip bad">overdue</span>' in listed.text


def test_the_audit_log_pages_and_filters(api: Api, settings: Settings, seeded: Seeded) -> None:
    """More entries than a page: the first page has 50 and a Next page link that leads on to
    the rest; a filter by action prefix shows only those entries."""
    with api.database.transaction() as session:
        for n in range(60):
            audit.record(session, Actor.system("test"), "demo.event", "demo", str(n), {"n": n})
    client, _ = _signed_in(api, settings, Role.AUDITOR)
    with client:
        first = client.get("/audit", params={"action": "demo.*"})
        assert first.status_code == 200
        assert first.text.count("<code>demo.event</code>") == 50
        link = re.search(r'<a href="([^"]+)" rel="next">', first.text)
        assert link is not None
        second = client.get(link.group(1).replace("&amp;", "&"))
        assert second.text.count("<code>demo.event</code>") == 10
        assert 'rel="next"' not in second.text
        verify = client.get("/audit/verify")
        assert "The chain is intact" in verify.text


def test_an_admin_changes_a_users_roles(api: Api, settings: Settings, seeded: Seeded) -> None:
    """The roles form sets exactly the boxes ticked; the change is audited with the admin."""
    client, token = _signed_in(api, settings, Role.ADMIN)
    with client:
        response = client.post(
            f"/users/{seeded.user_id}/roles",
            data={"csrf_token": token, "roles": ["approver", "auditor"]},
            follow_redirects=True,
        )
        assert "now has the roles: approver, auditor" in response.text
    with api.database.transaction() as session:
        user = session.get(User, seeded.user_id)
        assert user is not None
        assert user.roles == ["approver", "auditor"]
        entry = session.execute(
            select(AuditEntry).where(
                AuditEntry.action == "user.updated", AuditEntry.target_id == seeded.user_id
            )
        ).scalar_one()
        assert entry.actor == "actions-admin@example.com"


def test_a_damaged_plan_offers_recompile_and_recompile_fixes_it(
    api: Api, settings: Settings, seeded: Seeded
) -> None:
    """A published version whose stored plan is damaged shows the advice with a Recompile
    button to an editor (not to a viewer); pressing it compiles the plan again, audited, and
    the page no longer warns."""
    with api.database.transaction() as session:
        session.execute(
            update(WorkflowVersion)
            .where(WorkflowVersion.workflow_id == seeded.workflow_id)
            .values(plan={"damaged": True})
        )
    path = f"/workflows/{seeded.workflow_id}/versions/1"
    viewer, _ = _signed_in(api, settings, Role.VIEWER)
    with viewer:
        shown = viewer.get(path).text
        assert "The stored plan of this version is damaged" in shown
        assert "/recompile" not in shown
    client, token = _signed_in(api, settings, Role.EDITOR)
    with client:
        page = client.get(path).text
        assert "The stored plan of this version is damaged" in page
        assert f'action="{path}/recompile"' in page
        done = client.post(f"{path}/recompile", data={"csrf_token": token}, follow_redirects=True)
        assert "is compiled again" in done.text
        assert "The stored plan of this version is damaged" not in done.text
    with api.database.transaction() as session:
        version = session.execute(
            select(WorkflowVersion).where(WorkflowVersion.workflow_id == seeded.workflow_id)
        ).scalar_one()
        assert "entry" in version.plan
        entry = session.execute(
            select(AuditEntry).where(AuditEntry.action == "workflow.version_recompiled")
        ).scalar_one()
        assert entry.actor == "actions-editor@example.com"
