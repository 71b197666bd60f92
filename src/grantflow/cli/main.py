"""The `grantflow` command: sub-apps are registered here, each defined in its own module."""

from __future__ import annotations

import typer

from grantflow.cli import (
    access,
    audit,
    backup,
    connections,
    controls,
    evidence,
    grants,
    identities,
    inbox,
    incidents,
    jobs,
    reconcile,
    reports,
    reviews,
    runs,
    schemas,
    server,
    users,
    workflows,
)

app = typer.Typer(
    name="grantflow",
    help="Grantflow: access automation and identity-lifecycle workflows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
server.register(app)
backup.register(app)
app.add_typer(users.users_app, name="users")
app.add_typer(users.tokens_app, name="tokens")
app.add_typer(audit.app, name="audit")
app.add_typer(access.app, name="applications")
app.add_typer(identities.app, name="identities")
app.add_typer(grants.app, name="grants")
app.add_typer(incidents.app, name="incidents")
app.add_typer(inbox.app, name="inbox")
app.add_typer(reviews.app, name="reviews")
app.add_typer(controls.app, name="controls")
app.add_typer(reports.app, name="reports")
workflows.register(app)
runs.register(app)
evidence.register(runs.runs_app)
connections.register(app)
reconcile.register(app)
jobs.register(app)
app.add_typer(schemas.app, name="schema")


def main() -> None:
    app()
