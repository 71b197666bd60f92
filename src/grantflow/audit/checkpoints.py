"""Checkpoints: the chain's length and head hash at a time, signed, kept outside the database.

A checkpoint is one JSON object (`kind`, `version`, `at`, `entries`, `head_id`, `head`,
`key_id`, `signature`); the signature is an HMAC-SHA256 over the other fields under a key
derived from the master key. Written where the operator chooses (a file, the logs, a webhook),
checked by `verify --against`: a log shorter than a checkpoint lost its tail; a log whose entry
at a checkpoint's position has another hash was rewritten or rebuilt.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from grantflow.audit.keys import AuditKey, same, sign
from grantflow.audit.log import GENESIS, keys_of
from grantflow.audit.models import AuditEntry
from grantflow.config import Settings
from grantflow.errors import ValidationError
from grantflow.redaction import redact_webhook_url
from grantflow.store.database import Database, database_of

log = structlog.get_logger("grantflow.audit")

KIND = "grantflow.audit.checkpoint"
VERSION = 1


@dataclass(frozen=True)
class Checkpoint:
    at: dt.datetime
    entries: int  # how many entries the chain held
    head_id: int | None  # the id of the last of them
    head: str  # the hash of the last of them (GENESIS for an empty log)
    key_id: str  # the master key whose derived key signed it
    signature: str
    source: str = ""  # where it was read from, for messages

    @property
    def at_text(self) -> str:
        text = self.at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
        return f"{text} ({self.source})" if self.source else text

    def signed_fields(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "version": VERSION,
            "at": self.at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
            "entries": self.entries,
            "head_id": self.head_id,
            "head": self.head,
            "key_id": self.key_id,
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.signed_fields(), "signature": self.signature}


def _message(fields: dict[str, Any]) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def take(session: Session) -> Checkpoint:
    """The chain as it stands, signed under the current key. The chain lock makes the count
    and the head one consistent state."""
    key = keys_of(session).current()
    database_of(session).lock_audit_chain(session)
    entries = session.execute(select(func.count()).select_from(AuditEntry)).scalar_one()
    head = session.execute(
        select(AuditEntry.id, AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)
    ).first()
    unsigned = Checkpoint(
        at=dt.datetime.now(dt.UTC).replace(microsecond=0),
        entries=entries,
        head_id=head[0] if head else None,
        head=head[1] if head else GENESIS,
        key_id=key.id,
        signature="",
    )
    return Checkpoint(
        **{
            **unsigned.__dict__,
            "signature": sign(key.checkpoint, _message(unsigned.signed_fields())),
        }
    )


def check_signature(checkpoint: Checkpoint, keys: dict[str, AuditKey]) -> str | None:
    """Why the checkpoint cannot be trusted, or None."""
    key = keys.get(checkpoint.key_id)
    where = f"the checkpoint of {checkpoint.at_text}"
    if key is None:
        return (
            f"{where} is signed under master key {checkpoint.key_id}, which is not configured "
            "(restore that key to check it)"
        )
    expected = sign(key.checkpoint, _message(checkpoint.signed_fields()))
    if not same(expected, checkpoint.signature):
        return f"{where}: its signature does not match its content (the checkpoint was altered)"
    return None


# --- reading --------------------------------------------------------------------------------


def parse(data: Any, source: str = "") -> Checkpoint:
    """A checkpoint from its JSON form; a wrong shape is a ValidationError naming the field."""
    where = f"{source}: " if source else ""
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise ValidationError(f"{where}not a Grantflow audit checkpoint (kind must be {KIND!r})")
    if data.get("version") != VERSION:
        raise ValidationError(f"{where}version: must be {VERSION}")

    def field(name: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
        value = data.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValidationError(f"{where}{name}: missing or of the wrong type")
        return value

    entries = field("entries", int)
    if entries < 0:
        raise ValidationError(f"{where}entries: must not be negative")
    try:
        at = dt.datetime.fromisoformat(field("at", str))
    except ValueError:
        raise ValidationError(f"{where}at: not an RFC 3339 time") from None
    if at.tzinfo is None:
        raise ValidationError(f"{where}at: needs a time zone (Z)")
    return Checkpoint(
        at=at,
        entries=entries,
        head_id=field("head_id", int, optional=True),
        head=field("head", str),
        key_id=field("key_id", str),
        signature=field("signature", str),
        source=source,
    )


def load(path: Path) -> list[Checkpoint]:
    """Every checkpoint in a file: one JSON object, a JSON list, or one object a line (what
    the file destination appends)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValidationError(f"{path}: cannot be read ({exc.strerror})") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    parsed_lines = [_json_or_none(line) for _, line in lines]
    if lines and all(isinstance(item, dict) for item in parsed_lines):
        return [
            parse(item, f"{path} line {n}")
            for (n, _), item in zip(lines, parsed_lines, strict=True)
        ]
    whole = _json_or_none(text)
    if isinstance(whole, dict):
        return [parse(whole, str(path))]
    if isinstance(whole, list) and whole:
        return [parse(item, f"{path} item {n}") for n, item in enumerate(whole, 1)]
    bad = next((n for (n, _), item in zip(lines, parsed_lines, strict=True) if item is None), None)
    if bad is not None:
        raise ValidationError(f"{path} line {bad}: not JSON")
    raise ValidationError(f"{path}: holds no checkpoint")


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


# --- writing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    destination: str  # "file:<path>", "log", "webhook:<url>"
    error: str | None = None


def append_to_file(checkpoint: Checkpoint, path: Path) -> None:
    """One line, appended (O_APPEND: writers in several processes do not interleave)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(checkpoint.to_json(), sort_keys=True) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    with os.fdopen(fd, "a") as handle:
        handle.write(line)


def post_to_webhook(checkpoint: Checkpoint, url: str, timeout: float = 10.0) -> None:
    response = httpx.post(url, json=checkpoint.to_json(), timeout=timeout)
    response.raise_for_status()


def destinations(settings: Settings) -> list[str]:
    """Where the settings send checkpoints, e.g. ["file:/var/lib/grantflow/audit.jsonl", "log"];
    a webhook is shown without its credentials or query (they may hold a token)."""
    return [label for label, _ in _senders(settings)]


def _senders(settings: Settings) -> list[tuple[str, Callable[[Checkpoint], None]]]:
    found: list[tuple[str, Callable[[Checkpoint], None]]] = []
    path = settings.audit_checkpoint_file
    if path is not None:
        found.append((f"file:{path}", lambda c: append_to_file(c, path)))
    if settings.audit_checkpoint_log:
        found.append(("log", lambda c: log.info("audit.checkpoint", **c.to_json())))
    url = settings.audit_checkpoint_url
    if url is not None:
        found.append((f"webhook:{redact_webhook_url(url)}", lambda c: post_to_webhook(c, url)))
    return found


def write(
    database: Database, settings: Settings, extra_file: Path | None = None
) -> tuple[Checkpoint, list[Delivery]]:
    """Take a checkpoint and send it to every configured destination (and `extra_file`); a
    destination that fails is reported and logged, the others are still written."""
    with database.transaction() as session:
        checkpoint = take(session)
    senders = _senders(settings)
    if extra_file is not None:
        senders.append((f"file:{extra_file}", lambda c: append_to_file(c, extra_file)))
    deliveries = []
    for label, send in senders:
        try:
            send(checkpoint)
            deliveries.append(Delivery(label))
        except httpx.HTTPStatusError as exc:  # its text names the URL: say only the status
            reason = f"answered HTTP {exc.response.status_code}"
            log.warning("audit.checkpoint.failed", destination=label, error=reason)
            deliveries.append(Delivery(label, reason))
        except (OSError, httpx.HTTPError) as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            log.warning("audit.checkpoint.failed", destination=label, error=reason)
            deliveries.append(Delivery(label, reason))
    return checkpoint, deliveries
