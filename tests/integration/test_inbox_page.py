"""An inbox page reads who may act on its tasks once for the page: the views are those each
task gives alone, and ten tasks cost at most one statement more each than two (each task's
e-mails) — they cost thirteen each when every view read its routing again."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import select

from grantflow.auth.actor import Actor
from grantflow.auth.models import User
from grantflow.auth.permissions import Role
from grantflow.auth.users import create_user
from grantflow.people import inbox
from grantflow.store.database import Database
from tests.support.engine import publish, running_worker, workflow
from tests.support.ops import approval, approval_workflow, set_step, start_run, waiting_task
from tests.support.statements import statements_by_thread


def page_views(database: Database, email: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The approver's inbox page as the page reads it, and each task's view read alone."""
    with database.transaction() as session:
        user = session.execute(select(User).where(User.email == email)).scalar_one()
        page = inbox.inbox(session, user, limit=50)
        together = inbox.task_views(session, page.items, user)
    with database.transaction() as session:
        user = session.execute(select(User).where(User.email == email)).scalar_one()
        alone = [inbox.task_view(session, task, user) for task in inbox.inbox(session, user).items]
    return together, alone


def statements_for_page(database: Database, email: str, monkeypatch: pytest.MonkeyPatch) -> int:
    """The statements this thread sent for the page (not the running worker's)."""
    with statements_by_thread(monkeypatch) as counted, database.transaction() as session:
        user = session.execute(select(User).where(User.email == email)).scalar_one()
        inbox.task_views(session, inbox.inbox(session, user, limit=50).items, user)
    return counted[threading.current_thread().name]


@pytest.mark.postgres
@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_an_inbox_page_reads_its_routing_once(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two, then ten pending approvals — by the approver role, and one also named — in the
    inbox of an approver: each view is what the task gives alone (assignees, who can act,
    whether I can act, decisions, e-mails), and the page of ten costs no statement more than the
    page of two."""
    with database.transaction() as session:
        for name in ("avery", "blake"):
            create_user(
                session, Actor.system("test"), email=f"{name}@example.com", roles=[Role.APPROVER]
            )
    by_role = approval_workflow(database)
    named = publish(
        database,
        workflow(
            "Named approver",
            approval(approvers={"roles": ["approver"], "users": ["avery@example.com"]}),
            set_step(),
        ),
    )
    with running_worker(database):
        for flow in (by_role, named):
            waiting_task(database, start_run(database, flow))
        together, alone = page_views(database, "avery@example.com")
        assert len(together) == 2
        assert together == alone
        assert {tuple(v["can_act"]) for v in together} == {
            ("avery@example.com", "blake@example.com")
        }
        assert all(v["you_can_act"] for v in together)
        two = statements_for_page(database, "avery@example.com", monkeypatch)

        for _ in range(8):
            waiting_task(database, start_run(database, by_role))
        together, alone = page_views(database, "avery@example.com")
        assert len(together) == 10
        assert together == alone
        ten = statements_for_page(database, "avery@example.com", monkeypatch)
    assert ten == two, (two, ten)
