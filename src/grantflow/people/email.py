"""E-mail to people in the loop: an approval, a task or an escalated failure announced to a
user queues one e-mail to them (deduplicated per cause); workers deliver queued e-mail over
SMTP, retry transient failures with exponential backoff, and record every outcome on the
message (sent, failed with the reason, or skipped with the reason — never dropped silently).

Action links are minted when a message is sent, not when it is queued: the stored body holds
placeholders, so the database never holds a usable link (see `people.links`). Loaded through
the `grantflow.engine_listeners` entry point (and by the API's e-mail routes).
"""

from __future__ import annotations

import datetime as dt
import random
import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage as MimeMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Any

import structlog
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from grantflow import audit
from grantflow.auth import signin_links
from grantflow.auth.actor import Actor
from grantflow.auth.models import User
from grantflow.auth.permissions import Permission
from grantflow.config import Settings, load_settings
from grantflow.definitions.models import Workflow
from grantflow.engine import hooks
from grantflow.engine.models import StepRun
from grantflow.errors import Conflict, GrantflowError, NotFound
from grantflow.people import links, routing, tasks
from grantflow.people.models import ActionLink, EmailMessage, Task
from grantflow.people.tasks import TaskKind, TaskStatus
from grantflow.redaction import redactor_for
from grantflow.store.base import utcnow
from grantflow.store.database import Database, database_of
from grantflow.store.pagination import Page, decode_cursor, page_of

log = structlog.get_logger("grantflow.email")

# the console page of a link (`/links/<token>`: sign in, then act); API clients use the same
# token at /api/v1/links/<token>
LINK_PATH = "/links/"
NOT_CONFIGURED = "SMTP is not configured: set GRANTFLOW_SMTP_HOST to send e-mail"
MAX_BACKOFF_SECONDS = 3600.0
BATCH = 20  # messages one worker handles per tick at most


class EmailStatus:
    QUEUED = "queued"  # waiting for its (next) attempt
    SENDING = "sending"  # claimed by a worker; retried by another if that worker dies
    SENT = "sent"
    FAILED = "failed"  # a permanent SMTP error, or every attempt used
    SKIPPED = "skipped"  # not sent on purpose (e-mail off, task already decided); see why


class EmailKind:
    APPROVAL = "approval_pending"
    TASK = "task_assigned"
    ESCALATION = "escalation"


# --- settings ---------------------------------------------------------------------------------
_configured: Settings | None = None


def configure(settings: Settings | None) -> None:
    """Use these settings in this process (None: read GRANTFLOW_* from the environment, as
    `grantflow serve` and `grantflow worker` do)."""
    global _configured
    _configured = settings


def current_settings() -> Settings:
    return _configured if _configured is not None else load_settings()


# --- composing --------------------------------------------------------------------------------
def _marker(name: str) -> str:
    return f"[[grantflow:{name}]]"


def _plain(text: str | None) -> str:
    """Text from a workflow, neutralised so it cannot plant a link placeholder."""
    return (text or "").replace("[[grantflow:", "[ [grantflow:")


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(_plain(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def dedup_key(task: Task, user: User, session: Session) -> str:
    """One e-mail per task, stage and person; a reminder and a new escalation of the same
    step (after a retry) are causes of their own."""
    key = f"email:task:{task.id}:{task.current_stage}:{user.id}"  # (read by _stage_of)
    if task.kind == TaskKind.APPROVAL and task.reminded_at is not None:
        key += ":reminder"
    if task.kind == TaskKind.ESCALATION:
        step_run = session.get(StepRun, task.step_run_id)
        key += f":g{step_run.attempt_group if step_run is not None else 1}"
    return key


def _stage_of(message: EmailMessage) -> int | None:
    parts = (message.dedup_key or "").split(":")
    if len(parts) >= 5 and parts[:2] == ["email", "task"] and parts[3].isdigit():
        return int(parts[3])
    return None


def compose(session: Session, task: Task, user: User) -> tuple[str, str, str]:
    """(kind, subject, body) of the e-mail announcing `task` to `user`; the body carries
    placeholders for its links and their expiry, filled in when it is sent."""
    workflow = session.get(Workflow, task.workflow_id) if task.workflow_id else None
    title = _one_line(task.title, 200)
    requester = _one_line(task.requester or "Grantflow", 320)
    if requester.startswith("system:"):
        requester = f"Grantflow ({requester.removeprefix('system:')})"
    if task.kind == TaskKind.APPROVAL:
        kind, subject = EmailKind.APPROVAL, f"Approval needed: {title}"
        intro = f"{requester} asks for your approval:"
    elif task.kind == TaskKind.TASK:
        kind, subject = EmailKind.TASK, f"Task assigned: {title}"
        intro = f"{requester} assigned a task to you (or to one of your roles):"
    else:
        kind, subject = EmailKind.ESCALATION, f"Action needed: {title}"
        intro = "A workflow step failed and needs a decision: retry it, skip it or fail the run."
    if task.kind == TaskKind.APPROVAL and task.reminded_at is not None:
        subject = f"Reminder: {subject}"
    lines = [
        f"Hello {_one_line(user.display_name or user.email, 100)},",
        "",
        intro,
        "",
        f"  {title}",
        "",
    ]
    facts = [("Requested by", requester)]
    if task.subject_email:
        facts.append(("About", _one_line(task.subject_email, 320)))
    if workflow is not None:
        facts.append(("Workflow", _one_line(workflow.name, 200)))
    if task.kind == TaskKind.APPROVAL and len(task.stages) > 1:
        facts.append(("Stage", f"{task.current_stage + 1} of {len(task.stages)}"))
    facts.append(("Due", f"{task.due_at:%Y-%m-%d %H:%M} UTC" if task.due_at else "no deadline"))
    if task.kind == TaskKind.APPROVAL and task.require_justification:
        facts.append(("Justification", "required: add a comment when you approve"))
    lines += [f"{name + ':':<15}{value}" for name, value in facts]
    if task.instructions:
        lines += ["", _plain(task.instructions).strip()]
    if task.kind == TaskKind.ESCALATION and task.failure:
        lines += ["", f"What failed: {_plain(str(task.failure.get('message', '')))}"]
        if task.failure.get("next_action"):
            lines.append(f"What to do: {_plain(str(task.failure['next_action']))}")
    lines.append("")
    if task.kind == TaskKind.APPROVAL:
        lines += ["Approve:", f"  {_marker('link:approve')}", "", "Reject:"]
        lines += [f"  {_marker('link:reject')}", ""]
    else:
        verbs = "submit, skip or fail it" if task.kind == TaskKind.TASK else "retry, skip or fail"
        lines += [f"Open the task ({verbs}):", f"  {_marker('link:open')}", ""]
    lines += [
        f"Each link works once, for you only, until {_marker('expires')}. You sign in to "
        "Grantflow before anything is decided.",
        f"You can also act from your inbox: {_marker('public_url')}/inbox/{task.id}",
        "",
        "-- ",
        f"Grantflow · run {task.run_id}",
    ]
    return kind, _one_line(subject, 300), "\n".join(lines) + "\n"


# --- queueing ---------------------------------------------------------------------------------
def queue_message(
    session: Session,
    *,
    kind: str,
    to_address: str,
    subject: str,
    body: str,
    to_user_id: str | None = None,
    task_id: str | None = None,
    dedup_key: str | None = None,
    skip_reason: str | None = None,
) -> EmailMessage | None:
    """Queue an e-mail (or record it as skipped, with the reason); None when one for the same
    cause (`dedup_key`) exists already."""
    if (
        dedup_key is not None
        and session.execute(
            select(EmailMessage.id).where(EmailMessage.dedup_key == dedup_key)
        ).first()
    ):
        return None
    message = EmailMessage(
        kind=kind,
        to_address=to_address,
        to_user_id=to_user_id,
        subject=subject,
        body=body,
        task_id=task_id,
        dedup_key=dedup_key,
        status=EmailStatus.SKIPPED if skip_reason else EmailStatus.QUEUED,
        attempts=0,
        next_attempt_at=None if skip_reason else utcnow(),
        last_error=skip_reason,
    )
    try:
        with session.begin_nested():
            session.add(message)
            session.flush()
    except IntegrityError:  # another transaction queued the same cause just now
        return None
    return message


@tasks.on_announce
def announce(session: Session, task: Task, user: User) -> None:
    """A task was announced to `user`: e-mail them (once per cause)."""
    if not user.email:
        return
    try:
        skip = None if current_settings().smtp_host else NOT_CONFIGURED
    except GrantflowError as exc:
        skip = f"e-mail settings could not be read: {exc.message}"
    kind, subject, body = compose(session, task, user)
    message = queue_message(
        session,
        kind=kind,
        to_address=user.email,
        to_user_id=user.id,
        subject=subject,
        body=body,
        task_id=task.id,
        dedup_key=dedup_key(task, user, session),
        skip_reason=skip,
    )
    if message is not None:
        log.info(
            "email.queued" if skip is None else "email.skipped",
            email_id=message.id,
            task_id=task.id,
            to=user.email,
            reason=skip,
        )


# --- delivery ---------------------------------------------------------------------------------
@dataclass
class Outgoing:
    message_id: str
    to: str
    subject: str
    body: str


@dataclass
class Claimed:
    message_id: str
    attempt: int
    outgoing: Outgoing | None = None  # None: settled without sending (skipped, failed)
    link_ids: list[str] = field(default_factory=list)


@dataclass
class Result:
    ok: bool
    transient: bool = False
    reason: str = ""


@hooks.on_tick
def deliver_email(session: Session, queue: Any, now: dt.datetime) -> None:
    """The workers' timer: send what is due. It works in short transactions of its own (claim,
    send outside any transaction, record) and leaves the tick's session untouched, so no
    database lock is held while an SMTP server is slow."""
    deliver_due(database_of(session), current_settings())


def deliver_due(database: Database, settings: Settings, *, limit: int = BATCH) -> int:
    """Handle up to `limit` due messages; how many were handled."""
    handled = 0
    while handled < limit:
        claimed = _claim(database, settings)
        if claimed is None:
            break
        handled += 1
        if claimed.outgoing is not None:
            result = send(settings, claimed.outgoing)
            _record(database, settings, claimed, result)
    return handled


def _lease(settings: Settings) -> dt.timedelta:
    """How long a claimed message is left to its worker before another may retry it."""
    return dt.timedelta(seconds=settings.smtp_timeout_seconds * 4 + 60)


def backoff(settings: Settings, attempt: int) -> dt.timedelta:
    """Exponential, with jitter: retry_seconds, then twice that, … at most an hour."""
    base = min(settings.smtp_retry_seconds * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)
    return dt.timedelta(seconds=base * random.uniform(0.8, 1.2))


def _settle(message: EmailMessage, status: str, reason: str) -> None:
    message.status = status
    message.last_error = reason
    message.next_attempt_at = None
    log_event = log.warning if status == EmailStatus.FAILED else log.info
    log_event(f"email.{status}", email_id=message.id, to=message.to_address, reason=reason)


def _claim(database: Database, settings: Settings) -> Claimed | None:
    """Take the next due message (SKIP LOCKED: two workers never take the same one), decide
    whether it is still worth sending, mint its links and render it."""
    now = utcnow()
    with database.transaction() as session:
        message = session.execute(
            select(EmailMessage)
            .where(
                EmailMessage.status.in_([EmailStatus.QUEUED, EmailStatus.SENDING]),
                EmailMessage.next_attempt_at <= now,
            )
            .order_by(EmailMessage.next_attempt_at, EmailMessage.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).scalar_one_or_none()
        if message is None:
            return None
        claimed = Claimed(message_id=message.id, attempt=message.attempts + 1)
        if not settings.smtp_host:
            _settle(message, EmailStatus.SKIPPED, NOT_CONFIGURED)
            return claimed
        if message.status == EmailStatus.SENDING and message.attempts >= settings.smtp_max_attempts:
            _settle(
                message,
                EmailStatus.FAILED,
                f"gave up after {message.attempts} attempts: the worker sending it stopped"
                + (f"; last error: {message.last_error}" if message.last_error else ""),
            )
            return claimed
        stale = _not_worth_sending(session, message)
        if stale is not None:
            _settle(message, EmailStatus.SKIPPED, stale)
            return claimed
        message.status = EmailStatus.SENDING
        message.attempts = claimed.attempt
        message.next_attempt_at = now + _lease(settings)
        try:
            body, claimed.link_ids = _render(session, settings, message, now)
        except GrantflowError as exc:  # e.g. the master key cannot be read
            _settle(message, EmailStatus.FAILED, f"its links could not be signed: {exc.message}")
            return claimed
        claimed.outgoing = Outgoing(
            message_id=message.id, to=message.to_address, subject=message.subject, body=body
        )
        return claimed


def _not_worth_sending(session: Session, message: EmailMessage) -> str | None:
    """Why an e-mail about a task (or a user's account) should not go out any more, if so."""
    if message.task_id is None:
        user = session.get(User, message.to_user_id) if message.to_user_id else None
        if user is not None and not user.active:
            return "not sent: the user was deactivated"
        return None
    task = session.get(Task, message.task_id)
    if task is None:
        return "not sent: the task no longer exists"
    if task.status != TaskStatus.PENDING:
        return f"not sent: the {task.kind} was already {task.status} before the e-mail went out"
    stage = _stage_of(message)
    if stage is not None and stage != task.current_stage:
        return f"not sent: stage {stage + 1} was complete before the e-mail went out"
    if message.to_user_id is not None:
        user = session.get(User, message.to_user_id)
        if user is None or not user.active:
            return "not sent: the user was deactivated"
        if not routing.is_assignee(session, task, user):
            return "not sent: the user is no longer an assignee of the task"
    return None


def _render(
    session: Session, settings: Settings, message: EmailMessage, now: dt.datetime
) -> tuple[str, list[str]]:
    """The body with fresh single-use links in place of its placeholders; the links' ids."""
    body = message.body
    ids: list[str] = []
    task = session.get(Task, message.task_id) if message.task_id else None
    ttl = dt.timedelta(hours=settings.action_link_ttl_hours)
    if task is not None and message.to_user_id is not None:
        key = links.keys_for(settings)[0]
        for action in links.offered(task.kind):
            marker = _marker(f"link:{action}")
            if marker in body:
                link, token = links.mint(
                    session, key, task, message.to_user_id, action, ttl=ttl, now=now
                )
                body = body.replace(marker, f"{settings.public_url}{LINK_PATH}{token}")
                ids.append(link.id)
    body = _render_signin_links(session, settings, message, body)
    body = body.replace(_marker("expires"), f"{now + ttl:%Y-%m-%d %H:%M} UTC")
    body = body.replace(_marker("public_url"), settings.public_url)
    return body, ids


def _render_signin_links(
    session: Session, settings: Settings, message: EmailMessage, body: str
) -> str:
    """An invitation's or reset's link, minted now (auth.signin_links) for its addressee."""
    from grantflow.people import account_email

    purpose = account_email.KINDS.get(message.kind)
    user = session.get(User, message.to_user_id) if message.to_user_id else None
    marker = account_email.marker(purpose) if purpose else ""
    if purpose is None or user is None or marker not in body:
        return body
    _link, url = signin_links.mint(session, Actor.system("email"), settings, user, purpose)
    return body.replace(marker, url)


def _record(database: Database, settings: Settings, claimed: Claimed, result: Result) -> None:
    now = utcnow()
    with database.transaction() as session:
        message = session.get(EmailMessage, claimed.message_id, with_for_update=True)
        if message is None:
            return
        if message.status != EmailStatus.SENDING or message.attempts != claimed.attempt:
            log.warning(
                "email.lease_lost",
                email_id=message.id,
                attempt=claimed.attempt,
                hint="the send took longer than its lease; another worker may have sent it",
            )
        if result.ok:
            message.status = EmailStatus.SENT
            message.sent_at = now
            message.next_attempt_at = None
            log.info(
                "email.sent", email_id=message.id, to=message.to_address, attempt=claimed.attempt
            )
            return
        if claimed.link_ids:  # never delivered: nobody holds these tokens
            session.execute(delete(ActionLink).where(ActionLink.id.in_(claimed.link_ids)))
        if result.transient and claimed.attempt < settings.smtp_max_attempts:
            message.status = EmailStatus.QUEUED
            message.next_attempt_at = now + backoff(settings, claimed.attempt)
            message.last_error = f"attempt {claimed.attempt}: {result.reason}"
            log.warning(
                "email.retrying",
                email_id=message.id,
                attempt=claimed.attempt,
                reason=result.reason,
                next_attempt_at=message.next_attempt_at.isoformat(),
            )
            return
        _settle(
            message,
            EmailStatus.FAILED,
            f"gave up after {claimed.attempt} attempts: {result.reason}"
            if result.transient
            else result.reason,
        )


# --- SMTP -------------------------------------------------------------------------------------
def _domain(address: str) -> str:
    return parseaddr(address)[1].rpartition("@")[2] or "localhost"


def mime_message(settings: Settings, outgoing: Outgoing) -> MimeMessage:
    mime = MimeMessage()
    mime["From"] = settings.smtp_from
    mime["To"] = outgoing.to
    mime["Subject"] = outgoing.subject
    mime["Date"] = format_datetime(utcnow())
    mime["Message-ID"] = make_msgid("grantflow", domain=_domain(settings.smtp_from))
    mime["Auto-Submitted"] = "auto-generated"
    mime["X-Grantflow-Email-Id"] = outgoing.message_id
    mime.set_content(outgoing.body)
    return mime


def send(settings: Settings, outgoing: Outgoing) -> Result:
    """One delivery attempt. The password goes to the server's AUTH and nowhere else."""
    assert settings.smtp_host is not None
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
    try:
        context = ssl.create_default_context(
            cafile=str(settings.smtp_ca_file) if settings.smtp_ca_file else None
        )
    except (OSError, ssl.SSLError) as exc:
        return Result(
            ok=False,
            reason=f"GRANTFLOW_SMTP_CA_FILE {settings.smtp_ca_file} cannot be used: "
            f"{exc.strerror or exc}",
        )
    client: smtplib.SMTP | None = None
    try:
        if settings.smtp_security == "tls":
            client = smtplib.SMTP_SSL(
                settings.smtp_host,
                settings.smtp_port,
                timeout=settings.smtp_timeout_seconds,
                context=context,
            )
        else:
            client = smtplib.SMTP(
                settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_seconds
            )
        client.ehlo()
        if settings.smtp_security == "starttls":
            client.starttls(context=context)
            client.ehlo()
        if settings.smtp_username:
            client.login(settings.smtp_username, password)
        client.send_message(
            mime_message(settings, outgoing),
            from_addr=parseaddr(settings.smtp_from)[1],
            to_addrs=[outgoing.to],
        )
    except Exception as exc:
        transient, reason = classify(exc, settings)
        # (a server may quote what it was sent: the password, or AUTH's base64 of it)
        reason = redactor_for([password or ""], [settings.smtp_username or ""]).text(reason)
        return Result(ok=False, transient=transient, reason=reason)
    finally:
        if client is not None:
            _close(client)
    return Result(ok=True)


def _close(client: smtplib.SMTP) -> None:
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()


def _text(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return " ".join(text.split())


def classify(exc: BaseException, settings: Settings) -> tuple[bool, str]:
    """(transient, reason): 4xx replies, refused or reset connections, timeouts and DNS
    failures are transient; 5xx replies, TLS and configuration problems are permanent."""
    where = f"{settings.smtp_host}:{settings.smtp_port}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        refused = [(code, _text(text)) for code, text in exc.recipients.values()]
        transient = all(400 <= code < 500 for code, _ in refused)
        return transient, "recipient refused: " + "; ".join(f"{c} {t}" for c, t in refused)
    if isinstance(exc, smtplib.SMTPResponseException):
        what = {
            smtplib.SMTPSenderRefused: "sender refused",
            smtplib.SMTPDataError: "message refused",
            smtplib.SMTPAuthenticationError: "login refused (check GRANTFLOW_SMTP_USERNAME "
            "and GRANTFLOW_SMTP_PASSWORD)",
            smtplib.SMTPConnectError: f"{where} refused the connection",
            smtplib.SMTPHeloError: "greeting refused",
        }.get(type(exc), "the SMTP server answered")
        code = exc.smtp_code
        return not 500 <= code < 600, f"{what}: {code} {_text(exc.smtp_error)}"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return True, f"{where} closed the connection: {exc}"
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return False, (
            f"{where} does not support it: {exc} (check GRANTFLOW_SMTP_SECURITY and "
            "GRANTFLOW_SMTP_USERNAME)"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return False, (
            f"the certificate of {where} was not accepted: {exc.verify_message} (set "
            "GRANTFLOW_SMTP_CA_FILE to the CA that issued it)"
        )
    if isinstance(exc, ssl.SSLError):
        return False, (
            f"TLS with {where} failed: {exc.reason or exc} (check GRANTFLOW_SMTP_SECURITY: tls "
            "is implicit TLS, usually port 465; starttls usually port 587)"
        )
    if isinstance(exc, TimeoutError | socket.timeout):
        return True, f"{where} did not answer within {settings.smtp_timeout_seconds:g}s"
    if isinstance(exc, ConnectionRefusedError):
        return True, f"connection to {where} refused"
    if isinstance(exc, ConnectionError):
        return True, f"connection to {where} lost: {exc.strerror or exc}"
    if isinstance(exc, socket.gaierror):
        return True, f"cannot resolve {settings.smtp_host}: {exc.strerror or exc}"
    if isinstance(exc, OSError):  # smtplib.SMTPException included
        return True, f"network error talking to {where}: {exc}"
    return False, f"{type(exc).__name__}: {exc}"


# --- reading and resending ----------------------------------------------------------------------
def email_view(message: EmailMessage) -> dict[str, Any]:
    return {
        "id": message.id,
        "kind": message.kind,
        "to": message.to_address,
        "subject": message.subject,
        "task_id": message.task_id,
        "status": message.status,
        "attempts": message.attempts,
        "last_error": message.last_error,
        "next_attempt_at": message.next_attempt_at,
        "sent_at": message.sent_at,
        "created_at": message.created_at,
    }


def list_emails(
    session: Session,
    *,
    status: str | None = None,
    to: str | None = None,
    task_id: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[EmailMessage]:
    stmt = select(EmailMessage)
    if status:
        stmt = stmt.where(EmailMessage.status == status)
    if to:
        stmt = stmt.where(EmailMessage.to_address == to.strip().lower())
    if task_id:
        stmt = stmt.where(EmailMessage.task_id == task_id)
    after = decode_cursor(cursor, str)
    if after is not None:
        stmt = stmt.where(EmailMessage.id > after)
    rows = session.execute(stmt.order_by(EmailMessage.id).limit(limit + 1)).scalars().all()
    return page_of(rows, limit, key=lambda m: m.id)


def resend(session: Session, actor: Actor, message_id: str) -> EmailMessage:
    """Queue a failed or skipped e-mail again (e.g. once SMTP is configured or fixed)."""
    actor.require(Permission.USER_ADMIN)
    message = session.get(EmailMessage, message_id, with_for_update=True)
    if message is None:
        raise NotFound(f"e-mail {message_id} does not exist", target_type="email")
    if message.status not in (EmailStatus.FAILED, EmailStatus.SKIPPED):
        raise Conflict(
            f"e-mail {message.id} is {message.status}; only failed or skipped e-mail is resent",
            code="email_not_resendable",
        )
    task = session.get(Task, message.task_id) if message.task_id else None
    if message.task_id and (task is None or task.status != TaskStatus.PENDING):
        raise Conflict(
            f"the task of e-mail {message.id} is "
            f"{task.status if task else 'gone'}: its links would not work",
            code="task_closed",
        )
    previous = message.last_error
    message.status = EmailStatus.QUEUED
    message.attempts = 0
    message.next_attempt_at = utcnow()
    message.last_error = None
    audit.record(session, actor, "email.resent", "email", message.id, {"previous_error": previous})
    return message
