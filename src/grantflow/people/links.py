"""Action links: signed, single-use, expiring URLs in e-mail that let their addressee act on a
task after logging in.

A token is `<random id>.<signature>`: the signature is an HMAC-SHA256 over the random id, the
task, the user, the approval stage and the action, under a key derived (HKDF-SHA256, label
"grantflow action links") from the master key — never the master key itself. The database
keeps only an HMAC of the whole token (under a second derived key), so a copy of the database
holds no usable link. A link is bound to one user; it expires and works once. The action is not
stored: it is found by checking the signature against the actions the task offers.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from grantflow.config import Settings, master_keys
from grantflow.connections.crypto import derive_key
from grantflow.errors import GrantflowError, NotFound
from grantflow.people.models import ActionLink, Task, TaskDecision
from grantflow.people.tasks import TaskKind

LABEL = b"grantflow action links"
OPEN = "open"  # a task or an escalation: the link opens it; the action is chosen then
EMAIL_LINK = "email_link"  # TaskDecision.via of decisions taken through a link

_TOKEN = re.compile(r"^([A-Za-z0-9_-]{16,64})\.([A-Za-z0-9_-]{43})$")
NOT_VALID = "this link is not valid"


class Gone(GrantflowError):
    """A link that did exist but can no longer be used (used, expired, task decided)."""

    code = "link_gone"
    http_status = 410


@dataclass(frozen=True)
class LinkKey:
    sign: bytes  # signs tokens
    lookup: bytes  # hashes tokens for storage


def derive(master: bytes) -> LinkKey:
    """The link keys of one master key (HKDF-SHA256, info "grantflow action links")."""
    okm = derive_key(master, LABEL, 64)
    return LinkKey(sign=okm[:32], lookup=okm[32:])


def keys_for(settings: Settings) -> list[LinkKey]:
    """One per master key, the current first: links outlive a key rotation until they expire."""
    return [derive(key) for key in master_keys(settings)]


def offered(kind: str) -> list[str]:
    """The actions a link of an e-mail about a task of `kind` can carry."""
    return ["approve", "reject"] if kind == TaskKind.APPROVAL else [OPEN]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _signature(
    key: LinkKey, nonce: str, task_id: str, user_id: str, stage: int, action: str
) -> str:
    message = f"v1|{nonce}|{task_id}|{user_id}|{stage}|{action}".encode()
    return _b64(hmac.new(key.sign, message, hashlib.sha256).digest())


def token_hash(key: LinkKey, token: str) -> str:
    return hmac.new(key.lookup, token.encode(), hashlib.sha256).hexdigest()


def mint(
    session: Session,
    key: LinkKey,
    task: Task,
    user_id: str,
    action: str,
    *,
    ttl: dt.timedelta,
    now: dt.datetime,
) -> tuple[ActionLink, str]:
    """A new link row and its token (the token itself is never stored)."""
    nonce = _b64(secrets.token_bytes(18))
    token = f"{nonce}.{_signature(key, nonce, task.id, user_id, task.current_stage, action)}"
    link = ActionLink(
        token_hash=token_hash(key, token),
        task_id=task.id,
        user_id=user_id,
        expires_at=now + ttl,
    )
    session.add(link)
    session.flush()
    return link, token


@dataclass
class Resolved:
    link: ActionLink
    task: Task
    action: str
    stage: int  # 0-based, the stage the link was issued for


def resolve(session: Session, keys: list[LinkKey], token: str, *, lock: bool = False) -> Resolved:
    """The link a token names, with its verified action; NotFound for anything that is not a
    link Grantflow issued (a malformed, unknown or forged token), saying nothing more."""
    match = _TOKEN.match(token or "")
    if match is None:
        raise NotFound(NOT_VALID, code="link_not_valid")
    nonce, signature = match.groups()
    hashes_ = {token_hash(key, token): key for key in keys}
    stmt = select(ActionLink).where(ActionLink.token_hash.in_(list(hashes_)))
    if lock:
        stmt = stmt.with_for_update()
    link = session.execute(stmt).scalar_one_or_none()
    task = session.get(Task, link.task_id) if link is not None else None
    if link is None or task is None:
        raise NotFound(NOT_VALID, code="link_not_valid")
    key = hashes_[link.token_hash]
    for stage in range(max(len(task.stages), 1)):
        for action in offered(task.kind):
            expected = _signature(key, nonce, task.id, link.user_id, stage, action)
            if hmac.compare_digest(expected, signature):
                return Resolved(link=link, task=task, action=action, stage=stage)
    raise NotFound(NOT_VALID, code="link_not_valid")


def check_usable(session: Session, found: Resolved, now: dt.datetime) -> None:
    """Gone (410) when the link was used, expired, or the task moved on without it."""
    link, task = found.link, found.task
    if link.used_at is not None:
        chosen = session.execute(
            select(TaskDecision.decision)
            .where(
                TaskDecision.task_id == task.id,
                TaskDecision.user_id == link.user_id,
                TaskDecision.stage == found.stage,
                TaskDecision.via == EMAIL_LINK,
            )
            .order_by(TaskDecision.created_at.desc())
        ).first()
        if chosen is not None and found.action != OPEN and chosen[0] != found.action:
            raise Gone(
                f"this link can no longer be used: you already chose {chosen[0]} with the "
                "other link of the same e-mail",
                code="link_used",
            )
        raise Gone("this link was already used", code="link_used")
    if link.expires_at <= now:
        raise Gone(
            f"this link expired at {link.expires_at:%Y-%m-%d %H:%M}Z",
            code="link_expired",
            next_action=f"act on the task in your inbox (task {task.id})",
        )
    if task.status != "pending":
        raise Gone(
            f"this link is no longer valid: the {task.kind} is already {task.status}"
            + (f" (by {task.decided_by})" if task.decided_by else ""),
            code="task_closed",
        )
    if task.current_stage != found.stage:
        raise Gone(
            f"this link was for stage {found.stage + 1} of the approval, which is complete",
            code="link_stale",
            next_action=f"act on the task in your inbox (task {task.id})",
        )


def use(session: Session, found: Resolved, now: dt.datetime) -> None:
    """Mark the link used, and with it the other links of the same e-mail (the same task, user
    and stage, still unused): one e-mail leads to one decision."""
    session.execute(
        update(ActionLink)
        .where(
            ActionLink.task_id == found.task.id,
            ActionLink.user_id == found.link.user_id,
            ActionLink.used_at.is_(None),
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    found.link.used_at = now
