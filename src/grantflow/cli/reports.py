"""`grantflow reports generate | list | download`: reports over grants, run outcomes and the
audit log, stored with their SHA-256; through /api/v1/reports."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from grantflow.cli.client import Client, connect, segment
from grantflow.cli.context import (
    JSON_OPTION,
    emit_json,
    emit_table,
    err,
    errors_as_lines,
    fail,
    out,
    progress,
)
from grantflow.cli.saving import Saving, stopped_through_cleanup
from grantflow.cli.waiting import BUSY_HINT_SECONDS, Waiting
from grantflow.errors import BadRequest, ValidationError

app = typer.Typer(help="Generate, list and download reports.", no_args_is_help=True)
KINDS = "grants_by_application, grants_by_identity, run_outcomes_by_workflow or audit_export"
_COLUMNS = [
    "id", "kind", "format", "status", "rows", "size", "sha256", "created_by", "created_at"
]  # fmt: skip


def _params(values: list[str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            fail(
                ValidationError(
                    f"--param: {value!r} is not NAME=VALUE",
                    next_action="e.g. --param status=all or --param since=2025-01-01T00:00:00Z",
                )
            )
        parsed[key] = text
    return parsed


def _save(
    api: Client, report_id: str, output: Path, *, stored_already: bool = False
) -> tuple[int, str]:
    """Write the report's content to `output` as it arrives (`cli.saving`), checked against the
    stored SHA-256: `output` stands only with content that matches. Its size and SHA-256."""
    try:
        saving = Saving(output)
        with stopped_through_cleanup(), saving as download:
            try:
                got = api.request("GET", f"/reports/{segment(report_id)}/content", into=download)
                stored = got.headers.get("x-content-sha256")
                if stored != download.sha256:
                    why = (
                        f"does not match its stored SHA-256 ({download.sha256} != {stored}); "
                        "it was altered in the database"
                        if stored
                        else "came without its SHA-256 (X-Content-SHA256): the answer is not "
                        "the server's (a proxy or a redirect in between)"
                    )
                    err.print(f"error: report {report_id} {why}", markup=False)
                    raise typer.Exit(1)
            except BaseException:
                if saving.in_place and download.size:  # (a pipe cannot be taken back)
                    err.print(
                        f"  the {download.size:,} bytes already written to {output} are not "
                        "the report: discard them",
                        markup=False,
                    )
                raise
            saving.keep()
    except OSError as exc:
        err.print(f"error: cannot write {output}: {exc.strerror or exc}", markup=False)
        if stored_already:  # (generate: the report stands, only its file is missing)
            err.print(
                f"  next: the report is stored: grantflow reports download {report_id} -o FILE",
                markup=False,
            )
        raise typer.Exit(1) from None
    return download.size, download.sha256


def _one_on_stdout(output: Path | None, as_json: bool) -> None:
    if as_json and output is not None and _is_stdout(output):
        raise typer.BadParameter(
            "--json and the content would both go to standard output: leave one out"
        )


def _is_stdout(output: Path) -> bool:
    try:
        given, ours = os.stat(output), os.fstat(1)
    except OSError:
        return False
    return (given.st_dev, given.st_ino) == (ours.st_dev, ours.st_ino)


def _wait_written(api: Client, shown: dict[str, Any]) -> dict[str, Any]:
    """The report once the workers wrote it (or failed to), saying what needs a person."""
    report_id = shown["id"]
    return Waiting(
        api,
        f"report {report_id}",
        resume=f"grantflow reports download {report_id} -o FILE",
        behind=f"still generating after {BUSY_HINT_SECONDS:.0f} s with workers live: they write "
        "reports one at a time, oldest first, a few seconds per 100,000 rows (`grantflow "
        "reports list` shows the ones generating)",
    ).follow(
        shown,
        lambda: api.get(f"/reports/{report_id}"),
        going=lambda view: view["status"] == "generating",
        progress=lambda view: view["status"],  # (a report shows no rows written)
    )


@app.command("generate")
def generate(
    kind: str = typer.Argument(..., help=KINDS),
    fmt: str = typer.Option("csv", "--format", "-f", help="csv or json"),
    param: list[str] = typer.Option(
        None,
        "--param",
        "-p",
        help="NAME=VALUE (repeatable): status, application, identity; since, until; action",
    ),
    output: Path = typer.Option(
        None, "--output", "-o", dir_okay=False, help="also write the content to this file"
    ),
    no_wait: bool = typer.Option(
        False, "--no-wait", help="a large report: print it while the workers write it"
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Generate a report and store it; print its id, rows and SHA-256. A report of more than
    20,000 rows is written by the workers: this waits for it (Ctrl-C stops the waiting)."""
    if no_wait and output is not None:
        raise typer.BadParameter("--output needs the report written: leave out --no-wait")
    _one_on_stdout(output, as_json)
    body = {"kind": kind, "format": fmt, "params": _params(param or [])}
    with errors_as_lines({"format": "--format", "kind": "KIND"}), connect() as api:
        with progress(f"generating {kind}", quiet=as_json):
            # (locally no worker runs: this process writes it, whatever its size)
            shown = api.post("/reports", body, wait=not (api.remote or no_wait))
            if not no_wait:
                shown = _wait_written(api, shown)
        if shown["status"] == "failed":
            raise BadRequest(
                f"report {shown['id']} could not be generated: {shown['error']}",
                next_action="generate it again",
            )
        ready = shown["status"] == "ready"
        if output is not None and ready:
            _save(api, shown["id"], output, stored_already=True)
    if as_json:
        emit_json(shown)
        return
    if not ready:
        out.print(
            f"report {shown['id']} ({shown['kind']}, {shown['format']}): {shown['rows']} row(s), "
            f"generating; download it once ready: grantflow reports download {shown['id']} -o FILE",
            markup=False,
        )
        return
    said = err if output is not None and _is_stdout(output) else out  # (beside the content)
    said.print(
        f"report {shown['id']} ({shown['kind']}, {shown['format']}): {shown['rows']} row(s), "
        f"{shown['size']} bytes, sha256 {shown['sha256']}",
        markup=False,
    )
    if output is not None:
        said.print(f"written to {output}", markup=False)


@app.command("list")
def list_reports(
    kind: str = typer.Option(None, "--kind", help="only this kind: " + KINDS),
    limit: int = typer.Option(50, min=1, max=500),
    as_json: bool = JSON_OPTION,
) -> None:
    """Stored reports, newest first."""
    with errors_as_lines(), connect() as api:
        rows = api.items("/reports", limit, kind=kind)
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, _COLUMNS)


@app.command("download")
def download(
    report_id: str = typer.Argument(..., help="the report's id (or a unique prefix)"),
    output: Path = typer.Option(..., "--output", "-o", dir_okay=False, help="the file to write"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Write a stored report to a file as it arrives, checking its SHA-256: the file is
    replaced only by content that matches."""
    _one_on_stdout(output, as_json)
    with errors_as_lines(), connect() as api:
        report_id = api.full_id("/reports", report_id)
        size, digest = _save(api, report_id, output)
    if as_json:
        emit_json({"id": report_id, "output": str(output), "size": size, "sha256": digest})
    else:
        # (the content went to this command's own output: the line goes beside it)
        said = err if _is_stdout(output) else out
        said.print(f"{output}: {size} bytes, sha256 {digest}", markup=False)
