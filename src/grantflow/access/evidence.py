"""Evidence on runs: audit notes and files (e.g. a screenshot proving a manual revocation).

Files are checked (size, an allowed content type that matches the bytes), stored with their
SHA-256 and served back unchanged to auditors. Every addition is an audit entry.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints
from sqlalchemy import select
from sqlalchemy.orm import Session, undefer

from grantflow import audit
from grantflow.access.models import Evidence
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.engine.models import Run
from grantflow.errors import NotFound, PayloadTooLarge, ValidationError

# content type -> a check that the bytes really are of that type
_MAGIC: dict[str, tuple[bytes, ...]] = {
    "application/pdf": (b"%PDF-",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
}
_TEXT = {"text/plain", "text/csv", "application/json", "message/rfc822"}
ALLOWED_CONTENT_TYPES = tuple(sorted([*_MAGIC, *_TEXT]))

NoteText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=10000)]


class NoteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: NoteText


def _run(session: Session, run_id: str) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise NotFound(f"run {run_id} does not exist", target_type="run", target_id=run_id)
    return run


def add_note(session: Session, actor: Actor, run_id: str, note: str) -> Evidence:
    actor.require(Permission.EVIDENCE_WRITE)
    run = _run(session, run_id)
    item = Evidence(run_id=run.id, kind="note", note=note, created_by=actor.label)
    session.add(item)
    session.flush()
    audit.record(session, actor, "run.note_added", "run", run.id, {"evidence_id": item.id})
    return item


def check_file(filename: str, content_type: str, content: bytes, max_bytes: int) -> str:
    """The normalised content type, or a 4xx naming what is wrong."""
    if not filename or len(filename) > 255 or any(ch in filename for ch in "/\\\0"):
        raise ValidationError(
            "file: the file name must be 1-255 characters without path separators",
            details=[{"field": "file", "message": "bad file name"}],
        )
    if len(content) > max_bytes:
        raise PayloadTooLarge(
            f"file: {filename} is larger than the {max_bytes} bytes allowed for evidence",
            next_action="attach a smaller file, or raise GRANTFLOW_EVIDENCE_MAX_BYTES",
            details=[{"field": "file", "message": f"larger than {max_bytes} bytes"}],
        )
    if not content:
        raise ValidationError(
            "file: the file is empty", details=[{"field": "file", "message": "empty"}]
        )
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind not in ALLOWED_CONTENT_TYPES:
        raise ValidationError(
            f"file: content type {kind or '(none)'!r} is not accepted; use one of "
            + ", ".join(ALLOWED_CONTENT_TYPES),
            details=[{"field": "file", "message": "content type not accepted"}],
        )
    if kind in _MAGIC:
        ok = any(content.startswith(magic) for magic in _MAGIC[kind])
    else:
        try:
            content.decode("utf-8")
            ok = b"\0" not in content
        except UnicodeDecodeError:
            ok = False
    if not ok:
        raise ValidationError(
            f"file: the content is not {kind} (its bytes do not match the declared type)",
            details=[{"field": "file", "message": f"content does not match {kind}"}],
        )
    return kind


def add_file(
    session: Session,
    actor: Actor,
    run_id: str,
    *,
    filename: str,
    content_type: str,
    content: bytes,
    note: str = "",
    max_bytes: int,
) -> Evidence:
    actor.require(Permission.EVIDENCE_WRITE)
    run = _run(session, run_id)
    kind = check_file(filename, content_type, content, max_bytes)
    digest = hashlib.sha256(content).hexdigest()
    item = Evidence(
        run_id=run.id,
        kind="file",
        note=note,
        filename=filename,
        content_type=kind,
        size=len(content),
        sha256=digest,
        content=content,
        created_by=actor.label,
    )
    session.add(item)
    session.flush()
    audit.record(
        session,
        actor,
        "run.evidence_added",
        "run",
        run.id,
        {"evidence_id": item.id, "filename": filename, "sha256": digest, "size": len(content)},
    )
    return item


def list_evidence(session: Session, run_id: str) -> list[Evidence]:
    _run(session, run_id)
    return list(
        session.execute(
            select(Evidence).where(Evidence.run_id == run_id).order_by(Evidence.id)
        ).scalars()
    )


def get_file(session: Session, run_id: str, evidence_id: str) -> Evidence:
    item = session.execute(
        select(Evidence)
        .options(undefer(Evidence.content))
        .where(Evidence.id == evidence_id, Evidence.run_id == run_id)
    ).scalar_one_or_none()
    if item is None or item.kind != "file":
        raise NotFound(f"run {run_id} has no evidence file {evidence_id}", target_type="evidence")
    return item
