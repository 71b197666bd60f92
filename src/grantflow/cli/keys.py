"""`grantflow keys rotate`: a new master key, every credential re-encrypted under it. On the
database (the key file lives beside it), never through the API."""

from __future__ import annotations

import typer

from grantflow.cli.context import JSON_OPTION, emit_json, errors_as_lines, out

app = typer.Typer(help="Manage the master key.", no_args_is_help=True)


@app.command("rotate")
def rotate_keys(
    retire_old: bool = typer.Option(
        False, "--retire-old", help="drop the old keys from the key file afterwards"
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Generate a new master key and re-encrypt every credential under it, without downtime."""
    from grantflow.auth.actor import Actor
    from grantflow.cli.direct import database, settings
    from grantflow.connections.rotation import rotate

    loaded = settings()
    # a key from GRANTFLOW_SECRET_KEY is refused before the database is touched
    checked = loaded.secret_key is None
    with errors_as_lines(), database(loaded, migrated=checked) as db:
        report = rotate(db, loaded, Actor.system("cli"), retire_old=retire_old)
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
