"""E-mail to people in the loop, end to end: a run waits on an approval, the approver gets an
e-mail over real SMTP (an aiosmtpd sink), and its signed single-use link decides the approval
after logging in. Delivery retries transient SMTP errors, records permanent ones, and never
shows the SMTP password."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from structlog.testing import capture_logs

from grantflow.api import create_app
from grantflow.auth.permissions import Role
from grantflow.auth.users import find_user_by_email
from grantflow.config import Settings, load_settings
from grantflow.engine.worker import Worker
from grantflow.people import email
from grantflow.people.models import ActionLink, EmailMessage, Task
from grantflow.queue.database import DatabaseQueue
from grantflow.store.database import Database
from tests.conftest import Api
from tests.support.engine import publish, running_worker, start, wait_status
from tests.support.processes import grantflow_env, poll, run_grantflow
from tests.support.server import serve_in_thread
from tests.support.services import free_port
from tests.support.smtp import Sink, make_tls_files, smtp_sink

APPROVER = "approver@example.com"
PUBLIC_URL = "https://grantflow.example.com"
FROM = "Grantflow <grantflow@example.com>"
TITLE = "Access to Payroll"
_LINK = re.compile(r"^(Approve|Reject|Open the task[^:]*):\n  (\S+)$", re.MULTILINE)


def mail_settings(settings: Settings, **smtp: Any) -> Settings:
    """The test's settings (database, master key) with e-mail configured; fast retries."""
    assert settings.secret_key is not None
    return load_settings(
        database_url=settings.database_url,
        secret_key=settings.secret_key.get_secret_value(),
        secret_key_file=settings.secret_key_file,
        public_url=PUBLIC_URL,
        smtp_from=FROM,
        smtp_retry_seconds=0.05,
        smtp_max_attempts=3,
        smtp_timeout_seconds=5,
        **smtp,
    )


@contextmanager
def serving(settings: Settings, database: Database) -> Iterator[Api]:
    """The app with these settings, and this process's e-mail delivery using them too."""
    email.configure(settings)
    try:
        with serve_in_thread(create_app(settings, database)) as url:
            yield Api(base_url=url, database=database)
    finally:
        email.configure(None)


@dataclass
class Mail:
    api: Api
    db: Database
    sink: Sink
    settings: Settings
    approver: httpx.Client
    admin: httpx.Client

    def close(self) -> None:
        self.approver.close()
        self.admin.close()


@contextmanager
def mail_world(settings: Settings, database: Database, sink: Sink, **smtp: Any) -> Iterator[Mail]:
    smtp = {"smtp_security": "none", **smtp}
    configured = mail_settings(settings, smtp_host="127.0.0.1", smtp_port=sink.port, **smtp)
    with serving(configured, database) as api:
        world = Mail(
            api=api,
            db=database,
            sink=sink,
            settings=configured,
            approver=api.client(api.user_token(APPROVER, Role.APPROVER)),
            admin=api.as_role(Role.ADMIN, "admin@example.com"),
        )
        try:
            yield world
        finally:
            world.close()


@pytest.fixture
def sink() -> Iterator[Sink]:
    with smtp_sink() as running:
        yield running


@pytest.fixture
def mail(settings: Settings, database: Database, sink: Sink) -> Iterator[Mail]:
    with mail_world(settings, database, sink) as world:
        yield world


def approval_workflow(db: Database, name: str = "Payroll access", **config: Any) -> str:
    return publish(
        db,
        {
            "name": name,
            "trigger": {"type": "manual"},
            "steps": [
                {
                    "id": "approve",
                    "type": "approval",
                    "config": {
                        "title": TITLE,
                        "instructions": "Alice needs read access to Payroll for the audit.",
                        "approvers": {"users": [APPROVER]},
                        **config,
                    },
                    "next": "done",
                },
                {"id": "done", "type": "set", "config": {"values": {"granted": True}}},
            ],
        },
    )


def task_of(db: Database, run_id: str) -> Task:
    with db.transaction() as session:
        return session.execute(select(Task).where(Task.run_id == run_id)).scalar_one()


def emails_of(db: Database, task_id: str | None = None) -> list[EmailMessage]:
    with db.transaction() as session:
        stmt = select(EmailMessage).order_by(EmailMessage.created_at, EmailMessage.id)
        if task_id is not None:
            stmt = stmt.where(EmailMessage.task_id == task_id)
        return list(session.execute(stmt).scalars())


def wait_email(db: Database, task_id: str | None, *statuses: str) -> EmailMessage:
    """Poll until the (only) e-mail of the task has one of `statuses`."""

    def settled() -> EmailMessage | None:
        rows = emails_of(db, task_id)
        assert len(rows) <= 1, rows
        return rows[0] if rows and rows[0].status in statuses else None

    found: EmailMessage = poll(settled, timeout=60, what=f"an e-mail {statuses}")
    return found


def links_in(body: str) -> dict[str, str]:
    """{"Approve": url, "Reject": url} or {"Open the task (…)": url}."""
    return dict(_LINK.findall(body))


def path(url: str) -> str:
    """The API path of an e-mail's link: the e-mail links to the console page
    (`/links/<token>`); API clients use the same token at /api/v1/links/<token>."""
    assert url.startswith(f"{PUBLIC_URL}/links/"), url
    return "/api/v1" + url.removeprefix(PUBLIC_URL)


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    return body


def waiting_approval(mail: Mail) -> tuple[str, Task]:
    """Start a run of a fresh approval workflow; (run id, its task) once the run waits."""
    run_id = start(mail.db, approval_workflow(mail.db))
    wait_status(mail.db, run_id, "waiting")
    return run_id, task_of(mail.db, run_id)


def test_approval_email_link_decides_after_login_and_the_run_succeeds(mail: Mail) -> None:
    """The approver gets one e-mail with approve and reject links; GET shows the task, POST
    approves it (via email_link) and the run resumes to success; the link is then used up,
    the other link of the e-mail too, and nobody else could have used them."""
    other = mail.api.client(mail.api.user_token("other@example.com", Role.APPROVER))
    with running_worker(mail.db, tick_seconds=0.05):
        run_id, task = waiting_approval(mail)
        (received,) = mail.sink.wait_for(1)
        assert received.rcpt_tos == [APPROVER]
        assert received.mail_from == "grantflow@example.com"
        assert received.message["From"] == FROM
        assert received.message["To"] == APPROVER
        assert received.message["Subject"] == f"Approval needed: {TITLE}"
        body = received.body
        assert "Alice needs read access to Payroll for the audit." in body
        assert "Requested by:  Grantflow (test)" in body
        assert "Due:           no deadline" in body
        found = links_in(body)
        assert set(found) == {"Approve", "Reject"}
        approve, reject = path(found["Approve"]), path(found["Reject"])

        sent = wait_email(mail.db, task.id, "sent")
        assert (sent.attempts, sent.to_address, sent.kind) == (1, APPROVER, "approval_pending")
        assert sent.sent_at is not None
        # the database keeps only HMACs of the tokens: no usable link is stored anywhere
        with mail.db.transaction() as session:
            rows = list(session.execute(select(ActionLink)).scalars())
        assert len(rows) == 2
        for token in (approve, reject):
            raw = token.rsplit("/", 1)[1]
            assert raw not in sent.body
            assert all(raw not in (r.token_hash, r.id) for r in rows)
        assert "[[grantflow:link:approve]]" in sent.body

        shown = mail.approver.get(approve)
        assert shown.status_code == 200, shown.text
        assert shown.json()["link"]["action"] == "approve"
        assert shown.json()["task"]["id"] == task.id
        assert shown.json()["task"]["status"] == "pending"
        assert shown.json()["task"]["you_can_act"] is True

        # someone else, a forged or unknown token: nothing is said about the link
        assert error_of(other.get(approve), 403)["code"] == "link_not_yours"
        assert error_of(other.post(approve, json={}), 403)["code"] == "link_not_yours"
        tampered = approve[:-1] + ("A" if approve[-1] != "A" else "B")
        for bad in (tampered, "/api/v1/links/nonsense", "/api/v1/links/" + "x" * 300):
            assert error_of(mail.approver.get(bad), 404)["message"] == "this link is not valid"
        with mail.api.client() as anonymous:
            assert anonymous.get(approve).status_code == 401

        decided = mail.approver.post(approve, json={"comment": "audit season"})
        assert decided.status_code == 200, decided.text
        assert decided.json()["task"]["status"] == "approved"
        assert decided.json()["task"]["decisions"][0]["via"] == "email_link"
        assert decided.json()["task"]["decisions"][0]["comment"] == "audit season"
        wait_status(mail.db, run_id, "succeeded")

    again = error_of(mail.approver.post(approve, json={}), 410)
    assert (again["code"], again["message"]) == ("link_used", "this link was already used")
    assert error_of(mail.approver.get(approve), 410)["code"] == "link_used"
    other_link = error_of(mail.approver.post(reject, json={}), 410)
    assert "already chose approve" in other_link["message"]
    assert task_of(mail.db, run_id).status == "approved"

    detail = mail.admin.get(f"/api/v1/tasks/{task.id}").json()
    assert [(e["to"], e["status"], e["attempts"]) for e in detail["emails"]] == [
        (APPROVER, "sent", 1)
    ]
    assert detail["emails"][0]["subject"] == f"Approval needed: {TITLE}"
    other.close()


def test_reject_link_rejects_the_run(mail: Mail) -> None:
    """The reject link of the e-mail rejects: the run fails as rejected, and the approve link
    of the same e-mail can no longer be used."""
    with running_worker(mail.db, tick_seconds=0.05):
        run_id, _task = waiting_approval(mail)
        found = links_in(mail.sink.wait_for(1)[0].body)
        rejected = mail.approver.post(path(found["Reject"]), json={"comment": "not needed"})
        assert rejected.status_code == 200, rejected.text
        shown = wait_status(mail.db, run_id, "failed")
    assert "rejected" in json.dumps(shown["failure"])
    gone = error_of(mail.approver.post(path(found["Approve"])), 410)
    assert "already chose reject" in gone["message"]


def test_a_reminder_is_a_cause_of_its_own(mail: Mail) -> None:
    """remind_before: the approver gets a second e-mail, marked as a reminder, with its own
    links; the due time is in both."""
    workflow = approval_workflow(mail.db, timeout="1500ms", on_timeout="reject", remind_before="1s")
    with running_worker(mail.db, tick_seconds=0.05):
        run_id = start(mail.db, workflow)
        first, reminder = mail.sink.wait_for(2)
        assert first.message["Subject"] == f"Approval needed: {TITLE}"
        assert reminder.message["Subject"] == f"Reminder: Approval needed: {TITLE}"
        assert "Due:           20" in reminder.body
        assert links_in(first.body)["Approve"] != links_in(reminder.body)["Approve"]
        wait_status(mail.db, run_id, "failed")  # nobody decided: rejected at the timeout
    assert [e.status for e in emails_of(mail.db, task_of(mail.db, run_id).id)] == ["sent"] * 2


def test_an_expired_link_is_gone(mail: Mail) -> None:
    with running_worker(mail.db, tick_seconds=0.05):
        _run_id, task = waiting_approval(mail)
        approve = path(links_in(mail.sink.wait_for(1)[0].body)["Approve"])
    with mail.db.transaction() as session:
        session.execute(
            update(ActionLink)
            .where(ActionLink.task_id == task.id)
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
        )
    for response in (mail.approver.get(approve), mail.approver.post(approve, json={})):
        gone = error_of(response, 410)
        assert gone["code"] == "link_expired"
        assert "expired" in gone["message"]
    assert task_of(mail.db, task.run_id).status == "pending"


def test_a_transient_smtp_error_is_retried_then_sent(mail: Mail) -> None:
    """The server answers 451 the first time: the e-mail is retried after a backoff and sent
    on the second attempt; the failed attempt's links were discarded."""
    mail.sink.replies.append("451 4.3.0 mailbox busy, try later")
    with running_worker(mail.db, tick_seconds=0.05):
        _run_id, task = waiting_approval(mail)
        sent = wait_email(mail.db, task.id, "sent")
    assert sent.attempts == 2
    assert sent.last_error is not None
    assert "451 4.3.0 mailbox busy" in sent.last_error
    assert mail.sink.refused == ["451 4.3.0 mailbox busy, try later"]
    assert len(mail.sink.received) == 1
    with mail.db.transaction() as session:
        count = session.execute(select(func.count()).select_from(ActionLink)).scalar_one()
    assert count == 2  # the links of the e-mail that went out, not of the refused one
    detail = mail.admin.get(f"/api/v1/tasks/{task.id}").json()
    assert (detail["emails"][0]["status"], detail["emails"][0]["attempts"]) == ("sent", 2)


def test_a_permanent_smtp_error_fails_visibly_and_can_be_resent(mail: Mail) -> None:
    """550: failed at once with the server's reason, shown on the task and in the e-mail list;
    Resend (one action) queues it again and it goes out."""
    mail.sink.replies.append("550 5.1.1 mailbox unavailable")
    with running_worker(mail.db, tick_seconds=0.05):
        _run_id, task = waiting_approval(mail)
        failed = wait_email(mail.db, task.id, "failed")
        assert failed.attempts == 1
        assert failed.last_error == "message refused: 550 5.1.1 mailbox unavailable"

        detail = mail.admin.get(f"/api/v1/tasks/{task.id}").json()
        assert detail["emails"] == [
            {
                "to": APPROVER,
                "subject": f"Approval needed: {TITLE}",
                "status": "failed",
                "attempts": 1,
                "last_error": "message refused: 550 5.1.1 mailbox unavailable",
                "sent_at": None,
            }
        ]
        listed = mail.admin.get("/api/v1/emails", params={"status": "failed"})
        assert listed.status_code == 200, listed.text
        (item,) = listed.json()["items"]
        assert (item["id"], item["to"], item["task_id"]) == (failed.id, APPROVER, task.id)
        assert "550 5.1.1 mailbox unavailable" in item["last_error"]
        assert mail.admin.get("/api/v1/emails", params={"to": APPROVER}).json()["items"]
        assert not mail.admin.get("/api/v1/emails", params={"to": "x@example.com"}).json()["items"]
        assert mail.approver.get("/api/v1/emails").status_code == 403
        with mail.db.transaction() as session:
            assert session.execute(select(func.count()).select_from(ActionLink)).scalar() == 0

        resent = mail.admin.post(f"/api/v1/emails/{failed.id}/resend")
        assert resent.status_code == 200, resent.text
        assert resent.json()["status"] == "queued"
        sent = wait_email(mail.db, task.id, "sent")
    assert sent.attempts == 1
    assert len(mail.sink.received) == 1
    again = mail.admin.post(f"/api/v1/emails/{failed.id}/resend")
    assert error_of(again, 409)["code"] == "email_not_resendable"


def test_retries_end_in_failed_when_the_server_stays_away(
    settings: Settings, database: Database
) -> None:
    """Connection refused on every attempt: retried with backoff, then failed with the
    number of attempts and the reason."""
    closed = free_port()
    configured = mail_settings(
        settings, smtp_host="127.0.0.1", smtp_port=closed, smtp_security="none"
    )
    with database.transaction() as session:
        queued = email.queue_message(
            session, kind="test", to_address=APPROVER, subject="Hello", body="Hi\n"
        )
        assert queued is not None
    deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=20)
    while emails_of(database)[0].status != "failed" and dt.datetime.now(dt.UTC) < deadline:
        email.deliver_due(database, configured)
    (message,) = emails_of(database)
    assert (message.status, message.attempts) == ("failed", 3)
    assert message.last_error == (
        f"gave up after 3 attempts: connection to 127.0.0.1:{closed} refused"
    )


def test_without_smtp_email_is_recorded_as_skipped(settings: Settings, database: Database) -> None:
    """No GRANTFLOW_SMTP_HOST: the e-mail is still recorded — skipped, saying why."""
    assert settings.smtp_host is None
    with serving(settings, database) as api:
        api.user_token(APPROVER, Role.APPROVER)
        with api.as_role(Role.ADMIN, "admin@example.com") as admin:
            with running_worker(database, tick_seconds=0.05):
                run_id = start(database, approval_workflow(database))
                wait_status(database, run_id, "waiting")
                task = task_of(database, run_id)
                skipped = wait_email(database, task.id, "skipped")
                assert skipped.last_error == email.NOT_CONFIGURED
                assert "SMTP is not configured" in skipped.last_error
            listed = admin.get("/api/v1/emails", params={"status": "skipped"}).json()["items"]
            assert [(i["to"], i["last_error"]) for i in listed] == [
                (APPROVER, email.NOT_CONFIGURED)
            ]
            detail = admin.get(f"/api/v1/tasks/{task.id}").json()
            assert detail["emails"][0]["status"] == "skipped"
    assert emails_of(database)[0].attempts == 0


def test_the_same_cause_is_mailed_once(mail: Mail) -> None:
    """Announcing the same task to the same person again (a reassignment that keeps them, a
    second announcement) queues nothing new; a new approver is a new cause."""
    with running_worker(mail.db, tick_seconds=0.05):
        _run_id, task = waiting_approval(mail)
        wait_email(mail.db, task.id, "sent")
        kept = mail.admin.post(f"/api/v1/tasks/{task.id}/reassign", json={"users": [APPROVER]})
        assert kept.status_code == 200, kept.text
        with mail.db.transaction() as session:
            row = session.get(Task, task.id)
            user = find_user_by_email(session, APPROVER)
            assert row is not None
            assert user is not None
            email.announce(session, row, user)
            email.announce(session, row, user)
        assert len(emails_of(mail.db, task.id)) == 1

        mail.api.user_token("second@example.com", Role.APPROVER)
        added = mail.admin.post(
            f"/api/v1/tasks/{task.id}/reassign",
            json={"users": ["second@example.com"], "remove": []},
        )
        assert added.status_code == 200, added.text
        received = mail.sink.wait_for(2)
    assert sorted(r.rcpt_tos[0] for r in received) == [APPROVER, "second@example.com"]
    assert len(emails_of(mail.db, task.id)) == 2


def test_two_workers_never_send_the_same_message(mail: Mail) -> None:
    """Two workers ticking at once share the queue: every message goes out exactly once."""
    with mail.db.transaction() as session:
        for n in range(12):
            email.queue_message(
                session, kind="test", to_address=f"u{n}@example.com", subject=f"#{n}", body="x\n"
            )
    queues = [DatabaseQueue(mail.db) for _ in range(2)]
    workers = [Worker(mail.db, q, concurrency=1) for q in queues]
    barrier = threading.Barrier(2)

    def tick(worker: Worker) -> None:
        barrier.wait()
        for _ in range(3):
            worker.tick_once()

    threads = [threading.Thread(target=tick, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for worker, queue in zip(workers, queues, strict=True):
        worker.http.close()
        queue.close()
    received = mail.sink.wait_for(12)
    ids = [r.message["X-Grantflow-Email-Id"] for r in received]
    assert len(ids) == len(set(ids)) == 12
    assert {(m.status, m.attempts) for m in emails_of(mail.db)} == {("sent", 1)}


def test_a_task_email_link_opens_the_task(mail: Mail) -> None:
    """A human task's e-mail has one link that opens it; POSTing it with an action and the
    form's data submits the task."""
    workflow = publish(
        mail.db,
        {
            "name": "Laptop",
            "trigger": {"type": "manual"},
            "steps": [
                {
                    "id": "laptop",
                    "type": "task",
                    "config": {
                        "title": "Hand over a laptop",
                        "assignees": {"users": [APPROVER]},
                        "form": {
                            "type": "object",
                            "properties": {"serial": {"type": "string"}},
                            "required": ["serial"],
                        },
                    },
                }
            ],
        },
    )
    with running_worker(mail.db, tick_seconds=0.05):
        run_id = start(mail.db, workflow)
        wait_status(mail.db, run_id, "waiting")
        (received,) = mail.sink.wait_for(1)
        assert received.message["Subject"] == "Task assigned: Hand over a laptop"
        (label, url) = next(iter(links_in(received.body).items()))
        assert label.startswith("Open the task")
        link = path(url)
        assert mail.approver.get(link).json()["link"]["action"] == "open"
        needs = error_of(mail.approver.post(link, json={}), 422)
        assert "action" in needs["message"]
        done = mail.approver.post(link, json={"action": "submit", "data": {"serial": "SN-1"}})
        assert done.status_code == 200, done.text
        assert done.json()["task"]["status"] == "submitted"
        wait_status(mail.db, run_id, "succeeded")
    assert error_of(mail.approver.post(link, json={"action": "submit"}), 410)["code"] == (
        "link_used"
    )


def test_an_escalated_failure_mails_operators_again_after_each_retry(mail: Mail) -> None:
    """A step that escalates mails operators and admins an "open the task" link; retrying
    through it fails again and escalates again (a new cause: a new e-mail); skipping through
    the new e-mail's link lets the run go on."""
    closed = free_port()
    workflow = publish(
        mail.db,
        {
            "name": "Escalating",
            "trigger": {"type": "manual"},
            "steps": [
                {
                    "id": "call",
                    "type": "http",
                    "config": {"method": "POST", "url": f"http://127.0.0.1:{closed}/users"},
                    "on_failure": "escalate",
                    "next": "after",
                },
                {"id": "after", "type": "set", "config": {"values": {"done": True}}},
            ],
        },
    )
    ops = mail.api.client(mail.api.user_token("ops@example.com", Role.OPERATOR))

    def mails_to_ops(count: int) -> list[str]:
        def arrived() -> list[Any]:
            return [r for r in mail.sink.received if r.rcpt_tos == ["ops@example.com"]]

        got = poll(lambda: arrived()[count - 1 :], timeout=60, what=f"e-mail {count} to ops")
        subject = got[0].message["Subject"]
        assert subject == "Action needed: Step 'call' failed and needs a decision"
        assert "What failed:" in got[0].body
        (url,) = links_in(got[0].body).values()
        return [path(url)]

    with running_worker(mail.db, tick_seconds=0.05):
        run_id = start(mail.db, workflow)
        wait_status(mail.db, run_id, "waiting")
        (first,) = mails_to_ops(1)
        assert mail.approver.get(first).status_code == 403  # not theirs
        retried = ops.post(first, json={"action": "retry", "comment": "try again"})
        assert retried.status_code == 200, retried.text
        (second,) = mails_to_ops(2)
        assert second != first
        skipped = ops.post(second, json={"action": "skip", "comment": "done by hand"})
        assert skipped.status_code == 200, skipped.text
        wait_status(mail.db, run_id, "succeeded")
    task = task_of(mail.db, run_id)
    assert sorted(e.to_address for e in emails_of(mail.db, task.id)) == [
        "admin@example.com",
        "admin@example.com",
        "ops@example.com",
        "ops@example.com",
    ]
    ops.close()


PASSWORD = "Sm7p-pa55word-never-shown"


def test_starttls_with_login_and_the_password_never_shows(
    settings: Settings, database: Database, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """STARTTLS with a certificate checked against GRANTFLOW_SMTP_CA_FILE, then AUTH; the
    password appears in no log line, API answer, stored row or `grantflow config show`."""
    tls = make_tls_files(tmp_path)
    starttls = {
        "smtp_security": "starttls",
        "smtp_ca_file": tls.ca,
        "smtp_username": "mailer",
        "smtp_password": PASSWORD,
    }
    with (
        smtp_sink(starttls=tls, mailer=PASSWORD) as sink,
        capture_logs() as logs,
        mail_world(settings, database, sink, **starttls) as mail,
    ):
        with running_worker(mail.db, tick_seconds=0.05):
            _run_id, task = waiting_approval(mail)
            (received,) = sink.wait_for(1)
            wait_email(mail.db, task.id, "sent")
        assert received.tls is True
        assert received.login == "mailer"
        answers = [
            mail.admin.get("/api/v1/emails").text,
            mail.admin.get(f"/api/v1/tasks/{task.id}").text,
            mail.approver.get(path(links_in(received.body)["Approve"])).text,
        ]
        assert mail.settings.redacted()["smtp_password"] == "** set **"
        assert PASSWORD not in json.dumps(mail.settings.redacted())
    assert logs, "delivery logs something"
    with database.transaction() as session:
        stored = [
            (m.subject, m.body, m.last_error or "")
            for m in session.execute(select(EmailMessage)).scalars()
        ]
    out, err = capfd.readouterr()
    for text in [*answers, repr(logs), repr(stored), out, err]:
        assert PASSWORD not in text

    shown = run_grantflow(
        "config",
        "show",
        "--json",
        env=grantflow_env(smtp_host="smtp.example.com", smtp_username="u", smtp_password=PASSWORD),
        cwd=tmp_path,
    )
    assert shown.returncode == 0, shown.stderr
    assert PASSWORD not in shown.stdout + shown.stderr
    assert json.loads(shown.stdout)["smtp_password"] == "** set **"


def test_a_wrong_password_or_an_untrusted_certificate_fails_without_leaking(
    settings: Settings, database: Database, tmp_path: Path
) -> None:
    """A 535 login refusal is permanent and says which settings to check; a certificate the
    CA file does not vouch for is refused (verification is never turned off)."""
    tls = make_tls_files(tmp_path)
    with smtp_sink(starttls=tls, mailer=PASSWORD) as sink:
        with database.transaction() as session:
            email.queue_message(session, kind="test", to_address=APPROVER, subject="A", body="a")
        wrong = mail_settings(
            settings,
            smtp_host="127.0.0.1",
            smtp_port=sink.port,
            smtp_ca_file=tls.ca,
            smtp_username="mailer",
            smtp_password="not-" + PASSWORD,
        )
        email.deliver_due(database, wrong)
        (message,) = emails_of(database)
        assert (message.status, message.attempts) == ("failed", 1)
        assert message.last_error is not None
        assert message.last_error.startswith("login refused (check GRANTFLOW_SMTP_USERNAME")
        assert "535" in message.last_error
        assert PASSWORD not in message.last_error

        with database.transaction() as session:
            email.queue_message(session, kind="test", to_address=APPROVER, subject="B", body="b")
        untrusted = mail_settings(
            settings,
            smtp_host="127.0.0.1",
            smtp_port=sink.port,
            smtp_username="mailer",
            smtp_password=PASSWORD,
        )
        email.deliver_due(database, untrusted)
        message = emails_of(database)[1]
        assert (message.status, message.attempts) == ("failed", 1)
        assert message.last_error is not None
        assert "certificate" in message.last_error
        assert "GRANTFLOW_SMTP_CA_FILE" in message.last_error
        assert not sink.received


def test_implicit_tls(settings: Settings, database: Database, tmp_path: Path) -> None:
    """GRANTFLOW_SMTP_SECURITY=tls: TLS from the first byte (port 465 style)."""
    tls = make_tls_files(tmp_path)
    with smtp_sink(implicit_tls=tls) as sink:
        with database.transaction() as session:
            email.queue_message(
                session, kind="test", to_address=APPROVER, subject="Over TLS", body="secure\n"
            )
        configured = mail_settings(
            settings,
            smtp_host="127.0.0.1",
            smtp_port=sink.port,
            smtp_security="tls",
            smtp_ca_file=tls.ca,
        )
        assert email.deliver_due(database, configured) == 1
        (received,) = sink.wait_for(1)
    assert received.tls is True
    assert received.message["Subject"] == "Over TLS"
    assert emails_of(database)[0].status == "sent"


def test_configuration_refuses_credentials_in_clear() -> None:
    from grantflow.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="GRANTFLOW_SMTP_USERNAME"):
        load_settings(smtp_security="none", smtp_username="u", smtp_password="p")
    with pytest.raises(ConfigurationError, match="GRANTFLOW_PUBLIC_URL"):
        load_settings(public_url="grantflow.example.com")
    shown = load_settings(public_url="https://g.example.com/", smtp_host="")
    assert (shown.public_url, shown.smtp_host) == ("https://g.example.com", None)
    assert (shown.smtp_port, shown.smtp_security, shown.action_link_ttl_hours) == (
        587,
        "starttls",
        72,
    )
