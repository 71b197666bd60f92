"""`grantflow reconcile APP`: compare the accounts in an application's SCIM target with its
active grants, store the report, print it (and write its CSV)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from grantflow.access import reconcile as service
from grantflow.auth.actor import Actor
from grantflow.cli.context import (
    JSON_OPTION,
    database,
    emit_json,
    emit_table,
    err,
    errors_as_lines,
    out,
    settings,
)
from grantflow.connections.access import ConnectionAccess
from grantflow.connections.crypto import keyring_for
from grantflow.connections.outbound import guarded_client, policy_for

CLI = Actor.system("cli")

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
        service.DEFAULT_PAGE_SIZE, "--page-size", min=1, max=1000, help="users per SCIM request"
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """List every account in the application's SCIM target and compare them with its active
    grants: orphans (leavers flagged), missing accounts, mismatches. Exits 1 when the target
    could not be read (the failed report is stored too)."""
    loaded = settings()
    with errors_as_lines(), database(loaded) as db:
        http = guarded_client(policy_for(loaded.outbound_allow), follow_redirects=True)
        try:
            access = ConnectionAccess(db, keyring_for(loaded), http)
            request = service.ReconcileRequest(connection=connection, page_size=page_size)
            report_id = service.reconcile(db, access, CLI, application, request)
        finally:
            http.close()
        with db.transaction() as session:
            report = service.get_report(session, report_id)
            shown = service.view(session, report)
            text = service.report_csv(report)
    if csv_file is not None:
        csv_file.write_text(text, encoding="utf-8")
    if as_json:
        emit_json(shown)
    elif shown["status"] == service.ReportStatus.FAILED:
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
    if shown["status"] == service.ReportStatus.FAILED:
        raise typer.Exit(1)


def register(root: typer.Typer) -> None:
    root.command("reconcile")(reconcile)
