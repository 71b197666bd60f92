"""`grantflow runs note` and `grantflow runs evidence add | list | download`: audit notes and
evidence files on a run (e.g. proof of a manual revocation), through /api/v1/runs/{id}/notes
and /evidence."""

from __future__ import annotations

import hashlib
import mimetypes
from pathlib import Path
from typing import Any

import typer

from grantflow.cli.client import MIN_PREFIX, ApiError, Client, connect
from grantflow.cli.context import JSON_OPTION, emit_json, emit_table, errors_as_lines, out
from grantflow.cli.files import multipart, write_atomically
from grantflow.errors import BadRequest, InternalError, ValidationError

evidence_app = typer.Typer(
    help="Evidence files on a run (PDF, PNG, JPEG, GIF, text, CSV, JSON, .eml).",
    no_args_is_help=True,
)
COLUMNS = ["id", "kind", "filename", "content_type", "size", "note", "created_by", "created_at"]


def note(
    run: str = typer.Argument(..., help="the run's id (or a unique prefix)"),
    text: str = typer.Argument(..., help="the note (e.g. what was done by hand, and where)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Add an audit note to a run."""
    with errors_as_lines(), connect() as api:
        row = api.post(f"/runs/{api.full_id('/runs', run)}/notes", {"note": text.strip()})
    emit_json(row) if as_json else out.print(f"added note {row['id']} to run {row['run_id']}")


def _content_type(path: Path, given: str | None) -> str:
    if given:
        return given
    guessed, _encoding = mimetypes.guess_type(path.name)
    if guessed is None:
        raise ValidationError(
            f"FILE: cannot tell the content type of {path.name!r} from its name",
            next_action="pass --content-type (e.g. application/pdf, image/png, text/plain)",
        )
    return guessed


@evidence_app.command("add")
def add(
    run: str = typer.Argument(..., help="the run's id (or a unique prefix)"),
    file: Path = typer.Argument(..., help="the evidence file", dir_okay=False),
    content_type: str = typer.Option(
        None, "--content-type", help="default: from the file name (e.g. .png -> image/png)"
    ),
    note_text: str = typer.Option("", "--note", help="what the file shows"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Attach a file to a run; it is stored with its SHA-256 and audited."""
    with errors_as_lines():
        kind = _content_type(file, content_type)
        try:
            content = file.read_bytes()
        except OSError as exc:
            raise BadRequest(f"FILE: cannot read {file}: {exc.strerror}") from None
        body, body_type = multipart({"note": note_text}, "file", file.name, kind, content)
        with connect() as api:
            path = f"/runs/{api.full_id('/runs', run)}/evidence"
            row = api.request("POST", path, content=body, content_type=body_type).json()
    if as_json:
        emit_json(row)
    else:
        out.print(
            f"added {row['filename']} ({row['content_type']}, {row['size']} bytes) to run "
            f"{row['run_id']} as evidence {row['id']}\n  sha256 {row['sha256']}",
            markup=False,
        )


@evidence_app.command("list")
def list_evidence(
    run: str = typer.Argument(..., help="the run's id (or a unique prefix)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Notes and files of a run, oldest first, each file with its SHA-256."""
    with errors_as_lines(), connect() as api:
        rows = api.get(f"/runs/{api.full_id('/runs', run)}/evidence")
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, COLUMNS)


def _one(rows: list[dict[str, Any]], raw: str) -> dict[str, Any]:
    """The evidence whose id is `raw` or starts with it (a unique prefix)."""
    exact = [r for r in rows if r["id"] == raw]
    found = exact or [r for r in rows if r["id"].startswith(raw.lower())]
    if not found or (not exact and len(raw) < MIN_PREFIX):
        raise ApiError(404, f"the run has no evidence {raw}", "see `grantflow runs evidence list`")
    if len(found) > 1:
        names = ", ".join(r["id"] for r in found[:5])
        raise ApiError(409, f"evidence id prefix {raw!r} is ambiguous: it matches {names}",
                       "give more characters of the id")  # fmt: skip
    return found[0]


def _download(api: Client, run_id: str, raw: str) -> tuple[dict[str, Any], bytes]:
    row = _one(api.get(f"/runs/{run_id}/evidence"), raw)
    answer = api.request("GET", f"/runs/{run_id}/evidence/{row['id']}/content")
    return row, answer.content


@evidence_app.command("download")
def download(
    run: str = typer.Argument(..., help="the run's id (or a unique prefix)"),
    evidence: str = typer.Argument(..., help="the evidence's id (or a unique prefix)"),
    output: Path = typer.Option(..., "-o", "--output", help="where to write the file"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Write an evidence file, byte for byte, after checking it against its SHA-256."""
    with errors_as_lines():
        with connect() as api:
            row, content = _download(api, api.full_id("/runs", run), evidence)
        if hashlib.sha256(content).hexdigest() != row["sha256"]:
            raise InternalError(
                f"evidence {row['id']}: the stored bytes do not match their SHA-256; "
                "nothing was written",
                next_action="report this: the evidence was altered in the database",
            )
        write_atomically(output, content)
    row["output"] = str(output)
    if as_json:
        emit_json(row)
    else:
        out.print(
            f"wrote {row['filename']} ({row['size']} bytes) to {output}\n  sha256 {row['sha256']}",
            markup=False,
        )


def register(runs_app: typer.Typer) -> None:
    """`runs note` and `runs evidence ...` on the `runs` command group."""
    runs_app.command("note")(note)
    runs_app.add_typer(evidence_app, name="evidence")
