"""`grantflow connections ...`, through /api/v1/applications/{id}/connections and
/api/v1/connections/{id}. Credentials are read from a file or stdin and never echoed."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from grantflow.cli.client import ApiError, Client, connect, segment
from grantflow.cli.context import JSON_OPTION, emit_json, emit_table, errors_as_lines, out
from grantflow.cli.files import read_text
from grantflow.errors import BadRequest

app = typer.Typer(help="Manage connections and their credentials.", no_args_is_help=True)
APPLICATION = typer.Argument(..., help="the application's id, name or id prefix")
NAME = typer.Argument(..., help="the connection's name")
COLUMNS = ["id", "name", "kind", "auth_kind", "status", "status_reason", "credential_set"]
FROM_FILE = typer.Option(
    None, "--from-file", help="JSON file with the secret fields (default: standard input)"
)
# body fields -> the options that fill them
OPTIONS = {
    "auth_settings": "--header/--param/--token-url/--scope/--audience",
    "auth_settings.header": "--header",
    "auth_settings.param": "--param",
    "auth_settings.token_url": "--token-url",
    "rate_limit_per_second": "--rate-limit",
    "rate_limit_burst": "--burst",
    "allowed_hosts": "--allowed-host",
    "health_check": "--health-path",
}


def _row(c: dict[str, Any]) -> dict[str, Any]:
    return {**c, "credential_set": c.get("credential") is not None}


def _find(api: Client, application: str, name: str) -> dict[str, Any]:
    app_id = api.full_id("/applications", application)
    for connection in api.get(f"/applications/{app_id}/connections"):
        if connection["name"].lower() == name.strip().lower() or connection["id"] == name:
            found: dict[str, Any] = connection
            return found
    raise ApiError(
        404,
        f"application {application!r} has no connection {name!r}",
        f"see `grantflow connections list {application}`",
    )


def _secret(from_file: Path | None) -> dict[str, Any]:
    text = read_text(from_file, "--from-file") if from_file else sys.stdin.read()
    try:
        raw = json.loads(text)
    except ValueError:
        raise BadRequest('the credential must be a JSON object, e.g. {"token": "..."}') from None
    if not isinstance(raw, dict):
        raise BadRequest('the credential must be a JSON object, e.g. {"token": "..."}')
    return raw


@app.command("list")
def list_connections(application: str = APPLICATION, as_json: bool = JSON_OPTION) -> None:
    """The application's connections, their status and whether a credential is set."""
    with errors_as_lines(), connect() as api:
        app_id = api.full_id("/applications", application)
        rows = [_row(c) for c in api.get(f"/applications/{app_id}/connections")]
    emit_json(rows) if as_json else emit_table(rows, COLUMNS)


@app.command("show")
def show(
    connection: str = typer.Argument(..., help="the connection's id (or a unique prefix)"),
    as_json: bool = JSON_OPTION,
) -> None:
    """One connection: settings, status, last check, credential metadata (never the secret)."""
    with errors_as_lines(), connect() as api:
        row = _row(api.get(f"/connections/{segment(connection)}"))
    if as_json:
        emit_json(row)
        return
    for key, value in row.items():
        if value not in (None, {}, [], ""):
            out.print(f"{key + ':':<22} {value}", markup=False)


@app.command("create")
def create(
    application: str = APPLICATION,
    name: str = typer.Option(..., "--name", help="unique within the application"),
    base_url: str = typer.Option(..., "--base-url", help="e.g. https://api.example.com/v1"),
    kind: str = typer.Option("http", "--kind", help="http, scim, entra, okta or google"),
    auth_kind: str = typer.Option(
        "none",
        "--auth-kind",
        help="none, bearer, basic, api_key_header, api_key_query, oauth_client_credentials, "
        "oauth_refresh_token",
    ),
    header: str = typer.Option(None, "--header", help="api_key_header: the header's name"),
    param: str = typer.Option(None, "--param", help="api_key_query: the parameter's name"),
    token_url: str = typer.Option(None, "--token-url", help="oauth_*: the token endpoint"),
    scope: str = typer.Option(None, "--scope", help="oauth_*: the scopes to request"),
    audience: str = typer.Option(None, "--audience", help="oauth_*: the audience"),
    timeout_seconds: float = typer.Option(None, "--timeout-seconds"),
    rate_limit: float = typer.Option(None, "--rate-limit", help="requests per second"),
    burst: int = typer.Option(None, "--burst", help="requests allowed at once over the rate"),
    max_concurrency: int = typer.Option(None, "--max-concurrency"),
    allowed_host: list[str] = typer.Option(
        None, "--allowed-host", help="another host it may be redirected to (repeat)"
    ),
    health_path: str = typer.Option(None, "--health-path", help="Test connection's path"),
    credential_file: Path = typer.Option(
        None, "--credential-file", help="also set the credential from this JSON file"
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create a connection to an application (and set its credential, with --credential-file)."""
    settings = {"header": header, "param": param, "token_url": token_url, "scope": scope,
                "audience": audience}  # fmt: skip
    body: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "base_url": base_url,
        "auth_kind": auth_kind,
        "auth_settings": {k: v for k, v in settings.items() if v is not None},
        "timeout_seconds": timeout_seconds,
        "rate_limit_per_second": rate_limit,
        "rate_limit_burst": burst,
        "max_concurrency": max_concurrency,
        "allowed_hosts": allowed_host or None,
        "health_check": {"path": health_path} if health_path else None,
    }
    with errors_as_lines(OPTIONS):
        secret = _secret(credential_file) if credential_file else None
        with connect() as api:
            app_id = api.full_id("/applications", application)
            sent = {k: v for k, v in body.items() if v is not None}
            row = api.post(f"/applications/{app_id}/connections", sent)
            if secret is not None:
                row = api.put(f"/connections/{row['id']}/credential", secret)
    if as_json:
        emit_json(_row(row))
    else:
        credential = "; credential set" if row.get("credential") else ""
        out.print(
            f"created connection {row['name']} ({row['id']}) to {row['base_url']}{credential}",
            markup=False,
        )


def _store(api: Client, connection_id: str, secret: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = api.put(f"/connections/{connection_id}/credential", secret)
    return row


def _stored(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(_row(row))
    else:
        out.print(
            f"credential of {row['name']} set; it is stored encrypted and never shown again",
            markup=False,
        )


@app.command("set-credential")
def set_credential(
    application: str = APPLICATION,
    name: str = NAME,
    from_file: Path = FROM_FILE,
    as_json: bool = JSON_OPTION,
) -> None:
    """Set or replace a connection's credential from JSON on stdin or a file (never echoed)."""
    with errors_as_lines():
        secret = _secret(from_file)
        with connect() as api:
            row = _store(api, _find(api, application, name)["id"], secret)
    _stored(row, as_json)


@app.command("replace-credential")
def replace_credential(
    connection: str = typer.Argument(..., help="the connection's id (or a unique prefix)"),
    from_file: Path = FROM_FILE,
    as_json: bool = JSON_OPTION,
) -> None:
    """Replace a connection's credential, by connection id (the Replace credential action a
    reauth_required connection advises); runs waiting for it resume."""
    with errors_as_lines():
        secret = _secret(from_file)
        with connect() as api:
            row = _store(api, api.full_id("/connections", connection), secret)
    _stored(row, as_json)


@app.command("test")
def test(application: str = APPLICATION, name: str = NAME, as_json: bool = JSON_OPTION) -> None:
    """Send the connection's health request: latency, an error class, the new status."""
    with errors_as_lines(), connect() as api:
        result = api.post(f"/connections/{_find(api, application, name)['id']}/test")
    if as_json:
        emit_json(result)
    else:
        out.print(
            f"{'ok' if result['ok'] else 'FAILED'}: {result['message']} "
            f"(status {result['status']})",
            markup=False,
        )
        if result.get("next_action"):
            out.print(f"  next: {result['next_action']}", markup=False)
    if not result["ok"]:
        raise typer.Exit(1)
