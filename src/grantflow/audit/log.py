"""Writing, reading and verifying the audit chain."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from grantflow import timestamps
from grantflow.audit.models import AuditEntry
from grantflow.logging import redact
from grantflow.store.base import utcnow
from grantflow.store.database import database_of
from grantflow.store.pagination import Page, decode_cursor, page_of

if TYPE_CHECKING:
    from grantflow.auth.actor import Actor

GENESIS = "0" * 64


def _digest(entry: AuditEntry) -> str:
    content = {
        "at": entry.at.astimezone(dt.UTC).isoformat(),
        "actor_id": entry.actor_id,
        "actor": entry.actor,
        "action": entry.action,
        "target_type": entry.target_type,
        "target_id": entry.target_id,
        "summary": entry.summary,
        "request_id": entry.request_id,
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((entry.prev_hash + canonical).encode()).hexdigest()


def record(
    session: Session,
    actor: Actor,
    action: str,
    target_type: str,
    target_id: str | None,
    summary: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append an entry in the caller's transaction, so the change and its entry commit together."""
    database_of(session).lock_audit_chain(session)
    last = session.execute(
        select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)
    ).scalar_one_or_none()
    entry = AuditEntry(
        at=utcnow(),
        actor_id=actor.user_id,
        actor=actor.label,
        action=action,
        target_type=target_type,
        target_id=target_id,
        # Round-trip through JSON so the hash is computed over exactly what is stored.
        summary=json.loads(json.dumps(redact(summary or {}), default=timestamps.json_default)),
        request_id=actor.request_id,
        prev_hash=last or GENESIS,
    )
    entry.hash = _digest(entry)
    session.add(entry)
    session.flush()
    return entry


@dataclass(frozen=True)
class ChainReport:
    checked: int
    first_broken_id: int | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.first_broken_id is None


def verify(session: Session, batch: int = 1000) -> ChainReport:
    """Walk the chain from the start; report the first entry whose link or content is wrong."""
    previous = GENESIS
    checked = 0
    # Streamed (a server-side cursor on PostgreSQL): close it even when returning early.
    with session.execute(
        select(AuditEntry).order_by(AuditEntry.id).execution_options(yield_per=batch)
    ).scalars() as rows:
        for entry in rows:
            if entry.prev_hash != previous:
                return ChainReport(
                    checked,
                    entry.id,
                    "its prev_hash does not match the entry before it "
                    "(an entry was removed or altered before it)",
                )
            if _digest(entry) != entry.hash:
                return ChainReport(checked, entry.id, "its content does not match its hash")
            previous = entry.hash
            checked += 1
    return ChainReport(checked)


def query(
    session: Session,
    *,
    actor: str | None = None,
    action: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[AuditEntry]:
    """Entries newest first, filtered; `action` ending in `.*` matches a prefix."""
    stmt = select(AuditEntry)
    if actor:
        stmt = stmt.where(or_(AuditEntry.actor == actor, AuditEntry.actor_id == actor))
    if action:
        if action.endswith(".*"):
            stmt = stmt.where(AuditEntry.action.startswith(action[:-1], autoescape=True))
        else:
            stmt = stmt.where(AuditEntry.action == action)
    if target_type:
        stmt = stmt.where(AuditEntry.target_type == target_type)
    if target_id:
        stmt = stmt.where(AuditEntry.target_id == target_id)
    if since:
        stmt = stmt.where(AuditEntry.at >= since)
    if until:
        stmt = stmt.where(AuditEntry.at < until)
    before = decode_cursor(cursor, int)
    if before is not None:
        stmt = stmt.where(AuditEntry.id < before)
    rows = session.execute(stmt.order_by(AuditEntry.id.desc()).limit(limit + 1)).scalars().all()
    return page_of(rows, limit, key=lambda e: e.id)
