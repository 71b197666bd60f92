"""`grantflow reconcile APP`: compare the accounts in an application's SCIM target with its
active grants, store the report, print it (and write its CSV); through
/api/v1/applications/{id}/reconcile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from grantflow.cli.client import connect
from grantflow.cli.context import (
    JSON_OPTION,
    emit_json,
    emit_table,
    err,
    errors_as_lines,
    out,
    progress,
)
from grantflow.cli.files import write_atomically

DEFAULT_PAGE_SIZE = 100  # users per SCIM request (the service's default)

_COLUMNS = ["severity", "kind", "user_name", "email", "identity_email", "identity_state", "detail"]


def _counts(summary: dict[str, Any]) -> str:
    return (
        f"{summary.get('accounts', 0)} account(s): {summary.get('matched', 0)} matched "
        f"({summary.get('mismatches', 0)} with mismatches), {summary.get('orphans', 0)} "
        f"orphan(s) ({summary.get('leaver_orphans', 0)} of people who left), "
        f"{summary.get('duplicates', 0)} duplicate(s); {summary.get('missing', 0)} "
        f"missing account(s) for {summary.get('active_grants', 0)} active grant(s)"
    )


def reconcile(
    application: str = typer.Argument(..., help="the application's id or name"),
    connection: str = typer.Option(
        None, "--connection", help="the SCIM connection (name or id), if it has several"
    ),
    csv_file: Path = typer.Option(
        None, "--csv", help="also write the findings to this CSV file", dir_okay=False
    ),
    page_size: int = typer.Option(
        DEFAULT_PAGE_SIZE, "--page-size", min=1, max=1000, help="users per SCIM request"
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """List every account in the application's SCIM target and compare them with its active
    grants: orphans (leavers flagged), missing accounts, mismatches. Exits 1 when the target
    could not be read (the failed report is stored too)."""
    body = {"connection": connection, "page_size": page_size}
    with errors_as_lines({"page_size": "--page-size"}), connect() as api:
        app_id = api.full_id("/applications", application)
        with progress("reading the accounts", quiet=as_json):
            shown = api.post(f"/applications/{app_id}/reconcile", body)
        text = api.request("GET", f"/reconciliations/{shown['id']}/csv").content
    if csv_file is not None:
        with errors_as_lines():
            write_atomically(csv_file, text, "--csv")
    if as_json:
        emit_json(shown)
    elif shown["status"] == "failed":
        err.print(f"reconciliation {shown['id']} FAILED: {shown['error']}", markup=False)
        if shown["next_action"]:
            err.print(f"  next: {shown['next_action']}", markup=False)
    else:
        out.print(
            f"reconciliation {shown['id']} of {shown['application']['name']} through "
            f"connection {shown['connection'].get('name')}: {_counts(shown['summary'])}",
            markup=False,
        )
        if shown["items"]:
            emit_table(shown["items"], _COLUMNS)
        if csv_file is not None:
            out.print(f"findings written to {csv_file}", markup=False)
    if shown["status"] == "failed":
        raise typer.Exit(1)
