"""`grantflow runs note` and `grantflow runs evidence add | list | download`: audit notes and
evidence files on a run (e.g. proof of a manual revocation), through the same service as
/api/v1/runs/{id}/notes and /evidence."""

from __future__ import annotations

import hashlib
import mimetypes
import os
import tempfile
from pathlib import Path
from typing import Any

import typer

from grantflow.access import evidence as service
from grantflow.access.models import Evidence
from grantflow.auth.actor import Actor
from grantflow.cli.context import (
    JSON_OPTION,
    database,
    emit_json,
    errors_as_lines,
    out,
    settings,
)
from grantflow.cli.grants import fold_table
from grantflow.errors import BadRequest, InternalError, PayloadTooLarge, ValidationError

evidence_app = typer.Typer(
    help="Evidence files on a run (PDF, PNG, JPEG, GIF, text, CSV, JSON, .eml).",
    no_args_is_help=True,
)
CLI = Actor.system("cli")
MAX_NOTE = 10000


def evidence_row(item: Evidence) -> dict[str, Any]:
    """As /api/v1/runs/{id}/evidence lists it."""
    return {
        "id": item.id,
        "run_id": item.run_id,
        "kind": item.kind,
        "note": item.note,
        "filename": item.filename,
        "content_type": item.content_type,
        "size": item.size,
        "sha256": item.sha256,
        "created_by": item.created_by,
        "created_at": item.created_at,
    }


def note(
    run_id: str = typer.Argument(..., help="the run"),
    text: str = typer.Argument(..., help="the note (e.g. what was done by hand, and where)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Add an audit note to a run."""
    with errors_as_lines():
        text = text.strip()
        if not 1 <= len(text) <= MAX_NOTE:
            raise ValidationError(f"TEXT: the note must be 1-{MAX_NOTE} characters")
        with database() as db, db.transaction() as session:
            row = evidence_row(service.add_note(session, CLI, run_id, text))
    emit_json(row) if as_json else out.print(f"added note {row['id']} to run {run_id}")


def _content_type(path: Path, given: str | None) -> str:
    if given:
        return given
    guessed, _encoding = mimetypes.guess_type(path.name)
    if guessed is None:
        raise ValidationError(
            f"FILE: cannot tell the content type of {path.name!r} from its name",
            next_action="pass --content-type, one of " + ", ".join(service.ALLOWED_CONTENT_TYPES),
        )
    return guessed


@evidence_app.command("add")
def add(
    run_id: str = typer.Argument(..., help="the run"),
    file: Path = typer.Argument(..., help="the evidence file", dir_okay=False),
    content_type: str = typer.Option(
        None, "--content-type", help="default: from the file name (e.g. .png -> image/png)"
    ),
    note_text: str = typer.Option("", "--note", help="what the file shows"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Attach a file to a run; it is stored with its SHA-256 and audited."""
    loaded = settings()
    limit = loaded.evidence_max_bytes
    with errors_as_lines():
        if len(note_text) > MAX_NOTE:
            raise ValidationError(f"--note: at most {MAX_NOTE} characters")
        kind = _content_type(file, content_type)
        try:
            size = file.stat().st_size
            with file.open("rb") as handle:
                content = handle.read(limit + 1)
        except OSError as exc:
            raise BadRequest(f"FILE: cannot read {file}: {exc.strerror}") from None
        if size > limit:
            raise PayloadTooLarge(
                f"FILE: {file.name} is {size} bytes, more than the {limit} allowed for evidence",
                next_action="attach a smaller file, or raise GRANTFLOW_EVIDENCE_MAX_BYTES",
            )
        with database(loaded) as db, db.transaction() as session:
            item = service.add_file(
                session,
                CLI,
                run_id,
                filename=file.name,
                content_type=kind,
                content=content,
                note=note_text,
                max_bytes=limit,
            )
            row = evidence_row(item)
    if as_json:
        emit_json(row)
    else:
        out.print(
            f"added {row['filename']} ({row['content_type']}, {row['size']} bytes) to run "
            f"{run_id} as evidence {row['id']}\n  sha256 {row['sha256']}",
            markup=False,
        )


@evidence_app.command("list")
def list_evidence(run_id: str, as_json: bool = JSON_OPTION) -> None:
    """Notes and files of a run, oldest first, each file with its SHA-256."""
    with errors_as_lines(), database() as db, db.transaction() as session:
        rows = [evidence_row(e) for e in service.list_evidence(session, run_id)]
    if as_json:
        emit_json(rows)
    else:
        fold_table(
            rows,
            ["id", "kind", "filename", "content_type", "size", "note", "created_by", "created_at"],
        )


@evidence_app.command("download")
def download(
    run_id: str,
    evidence_id: str,
    output: Path = typer.Option(..., "-o", "--output", help="where to write the file"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Write an evidence file, byte for byte, after checking it against its SHA-256."""
    with errors_as_lines():
        with database() as db, db.transaction() as session:
            item = service.get_file(session, run_id, evidence_id)
            content = item.content or b""
            row = evidence_row(item)
        if hashlib.sha256(content).hexdigest() != row["sha256"]:
            raise InternalError(
                f"evidence {evidence_id}: the stored bytes do not match their SHA-256; "
                "nothing was written",
                next_action="report this: the evidence was altered in the database",
            )
        _write(output, content)
    row["output"] = str(output)
    if as_json:
        emit_json(row)
    else:
        out.print(
            f"wrote {row['filename']} ({row['size']} bytes) to {output}\n  sha256 {row['sha256']}",
            markup=False,
        )


def _write(path: Path, content: bytes) -> None:
    """All or nothing: a temporary file in the same directory, renamed over the target."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise BadRequest(f"--output: cannot write in {directory}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise BadRequest(f"--output: cannot write {path}: {exc.strerror}") from None


def register(runs_app: typer.Typer) -> None:
    """`runs note` and `runs evidence ...` on the existing `runs` command group."""
    runs_app.command("note")(note)
    runs_app.add_typer(evidence_app, name="evidence")
