"""Writing, reading and verifying the audit chain.

Each entry's `hash` is an HMAC-SHA256, under a key derived from the master key, of the hash of
the entry before and the entry's content; `key_id` names the master key. Entries written before
the chain was keyed have no `key_id` and a plain SHA-256 instead: they may only form the start
of the chain, and the first keyed entry after them (`audit.chain_keyed`) pins them.

Retiring a master key would leave the entries signed under it unverifiable, so before keys are
retired the chain is verified and resealed: an `audit.resealed` entry, signed under the newest
key, carries a digest of every entry before it. Entries under a key no longer configured verify
through the first reseal after them whose digest matches.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, func, inspect, select
from sqlalchemy.orm import Session

from grantflow import timestamps
from grantflow.audit.keys import AuditKey, AuditKeys, same, sign
from grantflow.audit.models import AuditEntry
from grantflow.errors import Conflict
from grantflow.redaction import redact_keys
from grantflow.store.base import utcnow
from grantflow.store.database import Database, database_of
from grantflow.store.pagination import BIGINT_KEYS, Page, decode_cursor, newest_of, page_of

if TYPE_CHECKING:
    from grantflow.audit.checkpoints import Checkpoint
    from grantflow.auth.actor import Actor

GENESIS = "0" * 64
RESEALED = "audit.resealed"


def _canonical(entry: AuditEntry | Row[Any]) -> str:
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
    if entry.key_id is not None:
        content["key_id"] = entry.key_id
    return json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)


def _legacy_digest(entry: AuditEntry | Row[Any], canonical: str | None = None) -> str:
    """The rule before the chain was keyed: anyone can recompute it."""
    text = entry.prev_hash + (canonical or _canonical(entry))
    return hashlib.sha256(text.encode()).hexdigest()


def keys_of(session: Session) -> AuditKeys:
    return AuditKeys(database_of(session).master_keys)


def record(
    session: Session,
    actor: Actor,
    action: str,
    target_type: str,
    target_id: str | None,
    summary: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append an entry in the caller's transaction, so the change and its entry commit together."""
    key = keys_of(session).current()
    last = _head_written_here(session)
    if last is None:
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
        summary=_as_stored(
            json.loads(json.dumps(redact_keys(summary or {}), default=timestamps.json_default))
        ),
        request_id=actor.request_id,
        prev_hash=last or GENESIS,
        key_id=key.id,
    )
    entry.hash = sign(key.chain, entry.prev_hash + _canonical(entry))
    session.add(entry)
    session.flush()
    session.info[_HEAD] = (session.get_transaction(), session.get_nested_transaction(), entry.hash)
    return entry


def _as_stored(value: Any) -> Any:
    """`value` as PostgreSQL's jsonb gives it back, so an entry's hash holds on both databases:
    jsonb keeps numbers as decimals, so a float written with an exponent that is a whole number
    (1e16) comes back as the integer, and -0.0 as 0.0 (SQLite keeps the text: the same values
    are stored there)."""
    if isinstance(value, float):
        if value == 0:
            return 0.0
        shown = repr(value)
        if "e" in shown:  # (inf and nan are refused by the database either way)
            exact = decimal.Decimal(shown)
            if exact == exact.to_integral_value():
                return int(exact)
        return value
    if isinstance(value, dict):
        return {k: _as_stored(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_stored(v) for v in value]
    return value


_HEAD = "audit_head"


def _head_written_here(session: Session) -> str | None:
    """The chain's head when this transaction wrote it and still holds the chain's lock: a
    transaction that records many entries (a campaign's revocations, an offboarding) locks and
    reads the head once. Any other transaction or savepoint than the one that wrote it (one
    rolled back would have undone the entry) reads the head again."""
    cached = session.info.get(_HEAD)
    if cached is None:
        return None
    transaction, savepoint, head = cached
    if transaction is session.get_transaction() and savepoint is session.get_nested_transaction():
        return str(head)
    del session.info[_HEAD]
    return None


def schema_is_keyed(database: Database) -> bool:
    """False when audit_entries exists without `key_id` (a database from before the keyed
    chain); a database without the table yet has nothing to pin."""
    with database.engine.connect() as conn:
        inspector = inspect(conn)
        if not inspector.has_table("audit_entries"):
            return True
        return any(c["name"] == "key_id" for c in inspector.get_columns("audit_entries"))


def seal_legacy(session: Session, actor: Actor) -> AuditEntry | None:
    """After the upgrade to the keyed chain: a keyed entry that pins the unkeyed ones before it
    (their head becomes its `prev_hash`, under the key). Nothing when there are none."""
    head = session.execute(
        select(AuditEntry).order_by(AuditEntry.id.desc()).limit(1)
    ).scalar_one_or_none()
    if head is None or head.key_id is not None:
        return None
    count = session.execute(select(func.count()).select_from(AuditEntry)).scalar_one()
    return record(session, actor, "audit.chain_keyed", "audit_log", None, {"legacy_entries": count})


def reseal(session: Session, actor: Actor) -> AuditEntry:
    """Verify the chain under every configured key, then append an entry under the current key
    that carries a digest of all entries before it, so they stay verifiable once older keys are
    retired. A chain that does not verify is not resealed (that would launder the damage)."""
    database_of(session).lock_audit_chain(session)
    walked = _walk(session, keys_of(session).by_id(), {}, 1000)
    if walked.reason is not None:
        where = f" at entry {walked.first_broken_id}" if walked.first_broken_id else ""
        raise Conflict(
            f"the audit chain does not verify{where}: {walked.reason}; retiring master keys now "
            "would destroy the evidence",
            next_action="investigate with `grantflow audit verify`; rotate without --retire-old "
            "until then",
        )
    return record(
        session,
        actor,
        RESEALED,
        "audit_log",
        None,
        {"entries": walked.checked, "digest": walked.digest},
    )


@dataclass(frozen=True)
class ChainReport:
    checked: int
    first_broken_id: int | None = None
    reason: str | None = None
    legacy_entries: int = 0  # unkeyed entries at the start, from before the keyed chain
    missing_triggers: tuple[str, ...] = ()
    checkpoints_checked: int = 0
    digest: str = ""  # of every entry walked, as `audit.resealed` records it

    @property
    def ok(self) -> bool:
        return self.reason is None


def verify(session: Session, against: Sequence[Checkpoint] = (), batch: int = 1000) -> ChainReport:
    """Walk the chain from the start; report the first entry whose link, content or signature is
    wrong, then whether it matches every checkpoint in `against` and the triggers are in place."""
    from grantflow.audit.checkpoints import check_signature

    keys = keys_of(session).by_id()
    missing = tuple(database_of(session).missing_audit_triggers(session))
    for checkpoint in against:
        problem = check_signature(checkpoint, keys)
        if problem:
            return ChainReport(0, None, problem, missing_triggers=missing)
    expected_at: dict[int, list[Checkpoint]] = {}
    for checkpoint in against:
        expected_at.setdefault(checkpoint.entries, []).append(checkpoint)
    walked = _walk(session, keys, expected_at, batch)
    reason = walked.reason
    if reason is None:
        longest = max(against, key=lambda c: c.entries, default=None)
        if longest is not None and longest.entries > walked.checked:
            reason = (
                f"the log holds {walked.checked} entries but the checkpoint of "
                f"{longest.at_text} recorded {longest.entries}: entries were removed from its end"
            )
    if reason is None and missing:
        reason = "the triggers that keep the log append-only are not in place: " + ", ".join(
            missing
        )
    return ChainReport(
        walked.checked,
        walked.first_broken_id,
        reason,
        walked.legacy_entries,
        missing,
        len(against) if reason is None else 0,
    )


def _walk(
    session: Session,
    keys: dict[str, AuditKey],
    expected_at: dict[int, list[Checkpoint]],
    batch: int,
) -> ChainReport:
    previous = digest = GENESIS
    checked = legacy = 0
    keyed = False
    unsealed: Row[Any] | None = None  # the first entry under a key that is not configured

    def broken(entry: Row[Any], reason: str) -> ChainReport:
        return ChainReport(checked, entry.id, reason, legacy)

    # Streamed (a server-side cursor on PostgreSQL): close it even when returning early. Plain
    # rows, not ORM objects: an entry is read once, and building objects took half the walk.
    table = AuditEntry.__table__
    with session.execute(
        select(*table.columns).order_by(table.c.id).execution_options(yield_per=batch)
    ) as rows:
        for entry in rows:
            if entry.prev_hash != previous:
                return broken(
                    entry,
                    "its prev_hash does not match the entry before it "
                    "(an entry was removed or altered before it)",
                )
            if entry.key_id is None:
                if keyed:
                    return broken(
                        entry,
                        "it has no key although keyed entries come before it "
                        "(rewritten without the key)",
                    )
                canonical = _canonical(entry)
                if not same(_legacy_digest(entry, canonical), entry.hash):
                    return broken(entry, "its content does not match its hash")
                legacy += 1
            else:
                keyed = True
                key = keys.get(entry.key_id)
                canonical = _canonical(entry)
                if key is None:
                    unsealed = unsealed or entry
                elif not same(sign(key.chain, entry.prev_hash + canonical), entry.hash):
                    return broken(entry, "its content does not match its hash")
                elif entry.action == RESEALED:
                    if entry.summary != {"entries": checked, "digest": digest}:
                        return broken(
                            entry,
                            "the entries before this reseal are not the ones it sealed "
                            "(rewritten since)",
                        )
                    unsealed = None
            digest = hashlib.sha256(f"{digest}{entry.hash}{canonical}".encode()).hexdigest()
            previous = entry.hash
            checked += 1
            for checkpoint in expected_at.get(checked, ()):
                if not same(checkpoint.head, entry.hash):
                    return broken(
                        entry,
                        f"it is entry {checked} of the log, whose hash the checkpoint of "
                        f"{checkpoint.at_text} recorded differently: the chain was rewritten "
                        "or rebuilt since",
                    )
    if unsealed is not None:
        return ChainReport(
            checked,
            unsealed.id,
            f"it is signed under master key {unsealed.key_id}, which is not configured, and no "
            "later reseal covers it (restore that key to verify the entries signed under it)",
            legacy,
        )
    if legacy and not keyed:
        return ChainReport(
            checked,
            None,
            f"all {legacy} entries are unkeyed and no keyed entry pins them: the chain was "
            "rebuilt without the key (a log upgraded by `grantflow migrate` starts its keyed "
            "part at once)",
            legacy,
        )
    return ChainReport(checked, legacy_entries=legacy, digest=digest)


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
    """Entries newest first, filtered; `action` ending in `.*` matches a prefix; `actor` is a
    user's id or an actor as entries name it (an e-mail, `system:…`)."""
    stmt = select(AuditEntry)
    exact: dict[str, str] = {}  # column -> value: the filters an index (column, id) serves
    if actor:
        exact["actor_id" if _is_id(actor) else "actor"] = actor
    if action:
        if action.endswith(".*"):
            stmt = stmt.where(AuditEntry.action.startswith(action[:-1], autoescape=True))
        else:
            exact["action"] = action
    if target_type:
        stmt = stmt.where(AuditEntry.target_type == target_type)
    if target_id:
        exact["target_id"] = target_id
    order: list[Any] = []
    before = decode_cursor(cursor, int, BIGINT_KEYS)
    # the most telling filter walks its index from its newest entry; the others filter
    lead = next((name for name in _LEADS if name in exact), None)
    for name, value in exact.items():
        column = getattr(AuditEntry, name)
        if name == lead:
            where, order = newest_of(session, [(column, value)], AuditEntry.id, before)
            stmt = stmt.where(*where)
        else:
            stmt = stmt.where(column == value)
    if since:
        stmt = stmt.where(AuditEntry.at >= since)
    if until:
        stmt = stmt.where(AuditEntry.at < until)
    if before is not None:
        stmt = stmt.where(AuditEntry.id < before)
    rows = session.execute(stmt.order_by(*order, AuditEntry.id.desc()).limit(limit + 1)).scalars()
    return page_of(rows.all(), limit, key=lambda e: e.id)


# The exact filters by how few entries each usually matches: one object's history, one
# actor's, one action's (each has an index (column, id): migration 0024).
_LEADS = ("target_id", "actor_id", "actor", "action")


def _is_id(text: str) -> bool:
    """A user's id (a UUID), rather than an actor's name: no name is a UUID."""
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return len(text) == 36
