"""E-mail about a user's own account: the invitation to choose a password, and the reset link
of a forgotten one. Like task e-mail, the stored body holds a placeholder; the single-use link
(`auth.signin_links`) is minted when the message is sent, so the database never holds one."""

from __future__ import annotations

import datetime as dt

import structlog
from sqlalchemy.orm import Session

from grantflow import audit
from grantflow.auth.actor import Actor
from grantflow.auth.models import User
from grantflow.auth.permissions import Permission
from grantflow.auth.signin_links import Purpose, ttl_of
from grantflow.config import Settings
from grantflow.people.email import NOT_CONFIGURED, queue_message
from grantflow.people.models import EmailMessage

log = structlog.get_logger("grantflow.email")

INVITE = "account_invite"
RESET = "account_reset"
KINDS = {INVITE: Purpose.INVITE, RESET: Purpose.RESET}
# a reset e-mail for one user at most this often (the forgot form cannot flood a mailbox)
RESET_EVERY = dt.timedelta(minutes=5)


def marker(purpose: Purpose) -> str:
    return f"[[grantflow:signin:{purpose}]]"


def _lasts(delta: dt.timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes % 60 == 0:
        hours = minutes // 60
        return f"{hours} hour{'s' if hours != 1 else ''}"
    return f"{minutes} minutes"


def _queue(
    session: Session,
    settings: Settings,
    user: User,
    kind: str,
    subject: str,
    lines: list[str],
    dedup: str | None,
) -> EmailMessage | None:
    message = queue_message(
        session,
        kind=kind,
        to_address=user.email,
        to_user_id=user.id,
        subject=subject,
        body="\n".join(lines) + "\n",
        dedup_key=dedup,
        skip_reason=None if settings.smtp_host else NOT_CONFIGURED,
    )
    if message is not None:
        log.info("email.queued", email_id=message.id, kind=kind, to=user.email)
    return message


def queue_invite(
    session: Session, settings: Settings, user: User, invited_by: str
) -> EmailMessage | None:
    """An invitation for `user` to choose a password (the link is minted when sent)."""
    lasts = _lasts(ttl_of(settings, Purpose.INVITE))
    lines = [
        f"Hello {user.display_name or user.email},",
        "",
        f"{invited_by} invited you to Grantflow ({settings.public_url}).",
        f"Choose your password here (the link works once, for {lasts}):",
        "",
        f"  {marker(Purpose.INVITE)}",
        "",
        f"Then sign in at {settings.public_url}/login with your e-mail {user.email}.",
    ]
    return _queue(session, settings, user, INVITE, "You are invited to Grantflow", lines, None)


def invite(session: Session, actor: Actor, settings: Settings, user: User) -> str:
    """Invite `user` to choose a password (user:admin; audited as user.invited): the e-mail is
    queued, its link minted when a worker sends it. The e-mail's status: `queued`, or `skipped`
    when e-mail is off (GRANTFLOW_SMTP_HOST unset)."""
    actor.require(Permission.USER_ADMIN)
    audit.record(session, actor, "user.invited", "user", user.id, {"email": user.email})
    message = queue_invite(session, settings, user, invited_by=actor.label)
    return message.status if message is not None else "queued"


def queue_reset(
    session: Session, settings: Settings, user: User, now: dt.datetime
) -> EmailMessage | None:
    """A password-reset link for `user`; at most one per RESET_EVERY (None: one went out)."""
    lasts = _lasts(ttl_of(settings, Purpose.RESET))
    bucket = int(now.timestamp() // RESET_EVERY.total_seconds())
    lines = [
        f"Hello {user.display_name or user.email},",
        "",
        f"Someone (we hope you) asked to reset the Grantflow password of {user.email}.",
        f"Choose a new password here (the link works once, for {lasts}):",
        "",
        f"  {marker(Purpose.RESET)}",
        "",
        "If it was not you, ignore this e-mail: your password stays as it is.",
    ]
    dedup = f"email:reset:{user.id}:{bucket}"
    return _queue(session, settings, user, RESET, "Reset your Grantflow password", lines, dedup)
