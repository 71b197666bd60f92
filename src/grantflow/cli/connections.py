"""`grantflow connections ...` and `grantflow keys rotate`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from grantflow.access.applications import find_application
from grantflow.auth.actor import Actor
from grantflow.cli.context import (
    JSON_OPTION,
    database,
    emit_json,
    emit_table,
    errors_as_lines,
    out,
    settings,
)
from grantflow.connections import health, service
from grantflow.connections.access import ConnectionAccess
from grantflow.connections.crypto import keyring_for
from grantflow.connections.outbound import guarded_client, policy_for
from grantflow.connections.rotation import rotate
from grantflow.errors import BadRequest, NotFound

app = typer.Typer(help="Manage connections and their credentials.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage the master key.", no_args_is_help=True)
CLI = Actor.system("cli")


def _row(c: Any) -> dict[str, Any]:
    return {
        "id": c.id,
        "application_id": c.application_id,
        "name": c.name,
        "kind": c.kind,
        "base_url": c.base_url,
        "auth_kind": c.auth_kind,
        "status": c.status,
        "status_reason": c.status_reason,
        "last_checked_at": c.last_checked_at,
        "credential_set": c.credential is not None,
    }


def _find(session: Any, application: str, name: str) -> Any:
    app_id = find_application(session, application).id
    connection = service.find_connection(session, app_id, name)
    if connection is None:
        raise NotFound(f"application {application!r} has no connection {name!r}")
    return connection


@app.command("list")
def list_connections(application: str, as_json: bool = JSON_OPTION) -> None:
    with errors_as_lines(), database() as db, db.transaction() as session:
        app_id = find_application(session, application).id
        rows = [_row(c) for c in service.list_connections(session, app_id)]
    emit_json(rows) if as_json else emit_table(
        rows, ["name", "kind", "auth_kind", "status", "status_reason", "credential_set"]
    )


@app.command("set-credential")
def set_credential(
    application: str,
    name: str,
    from_file: Path = typer.Option(
        None, "--from-file", help="JSON file with the secret fields (default: stdin)"
    ),
) -> None:
    """Set or replace a connection's credential from JSON on stdin or a file (never echoed)."""
    loaded = settings()
    with errors_as_lines():
        text = from_file.read_text() if from_file else sys.stdin.read()
        try:
            raw = json.loads(text)
        except ValueError:
            raise BadRequest(
                'the credential must be a JSON object, e.g. {"token": "..."}'
            ) from None
        with database(loaded) as db, db.transaction() as session:
            connection = _find(session, application, name)
            service.set_credential(session, CLI, keyring_for(loaded), connection.id, raw)
    out.print(f"credential of {name} set; it is stored encrypted and never shown again")


@app.command("test")
def test(application: str, name: str, as_json: bool = JSON_OPTION) -> None:
    """Send the connection's health request: latency, an error class, the new status."""
    loaded = settings()
    with errors_as_lines(), database(loaded) as db:
        with db.transaction() as session:
            connection_id = _find(session, application, name).id
        http = guarded_client(policy_for(loaded.outbound_allow), follow_redirects=True)
        result = health.test_connection(
            ConnectionAccess(db, keyring_for(loaded), http), CLI, connection_id
        )
    if as_json:
        emit_json(result.to_dict())
    else:
        out.print(
            f"{'ok' if result.ok else 'FAILED'}: {result.message} (status {result.status})",
            markup=False,
        )
        if result.next_action:
            out.print(f"  next: {result.next_action}", markup=False)
    if not result.ok:
        raise typer.Exit(1)


@keys_app.command("rotate")
def rotate_keys(
    retire_old: bool = typer.Option(
        False, "--retire-old", help="drop the old keys from the key file afterwards"
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Generate a new master key and re-encrypt every credential under it, without downtime."""
    loaded = settings()
    with errors_as_lines(), database(loaded) as db:
        report = rotate(db, loaded, CLI, retire_old=retire_old)
    data = {
        "new_key_id": report.new_key_id,
        "reencrypted": report.reencrypted,
        "retired": report.retired,
    }
    if as_json:
        emit_json(data)
    else:
        out.print(
            f"new master key {report.new_key_id}; {report.reencrypted} credential(s) "
            f"re-encrypted"
            + (
                f"; retired {', '.join(report.retired)}"
                if report.retired
                else "; old keys kept readable"
            )
        )


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="connections")
    root.add_typer(keys_app, name="keys")
