"""The `grantflow` command: global options, and the table of sub-commands (loaded on use).

Data commands talk to Grantflow's API (`grantflow.cli.client`): a server given by `--url`,
GRANTFLOW_URL or `grantflow login`, else the app inside this process on the local database.
The commands marked "database" below open the database directly; they run where it is.
"""

from __future__ import annotations

import typer

from grantflow import __version__
from grantflow.cli import collector
from grantflow.cli.client import OPTIONS
from grantflow.cli.lazy import Lazy, LazyGroup

API = "Commands (through the API: of a server, else of the local database)"
DATABASE = "Commands on the database (run them where it is)"


def _api(target: str, help_text: str) -> Lazy:
    return Lazy(f"grantflow.cli.{target}", help_text, API)


def _db(target: str, help_text: str, hidden: tuple[str, ...] = ()) -> Lazy:
    return Lazy(f"grantflow.cli.{target}", help_text, DATABASE, hidden)


# Libraries others import whenever installed, for what a worker never does: httpx imports
# rich and pygments for its own command line, structlog colorama for coloured tracebacks
# (Grantflow's logs print them as plain text: grantflow.logging) and greenlet for a context
# per greenlet (a worker's are threads; SQLAlchemy needs greenlet only for asyncio). About
# 6 MB of a worker.
WORKER_NEVER_USES = ("rich", "pygments", "colorama", "greenlet")


COMMANDS: dict[str, Lazy] = {
    "runs": _api("runs:runs_app", "Start, inspect and operate on runs."),
    "inbox": _api(
        "inbox:app", "Approvals and tasks waiting on people: list, show, and decide them."
    ),
    "workflows": _api("workflows:app", "Author, publish and inspect workflows."),
    "apply": _api("workflows:apply", "Create or update a workflow from a file; idempotent."),
    "grants": _api("grants:app", "Grant, revoke and extend access; see each grant's automation."),
    "identities": _api(
        "identities:app", "Manage identities: create, change, offboard, import CSV."
    ),
    "applications": _api("access:app", "Manage applications."),
    "connections": _api("connections:app", "Manage connections and their credentials."),
    "incidents": _api("incidents:app", "Security incidents: revocations that failed."),
    "reconcile": _api("reconcile:reconcile", "Compare a SCIM target's accounts with the grants."),
    "jobs": _api("jobs:app", "Scheduled jobs: status, preview, Run now, occurrences."),
    "reviews": _api("reviews:app", "Access reviews: start, decide keep or revoke, close, report."),
    "controls": _api("controls:app", "Evaluate the built-in controls and read their findings."),
    "reports": _api("reports:app", "Generate, list and download reports."),
    "usage": _api("safety:usage_app", "Usage against the spend caps."),
    "queue": _api("runs:queue_app", "Inspect the queue."),
    "users": _api("users:users_app", "Manage users."),
    "tokens": _api("users:tokens_app", "Manage API tokens."),
    "audit": _api("audit:app", "Read the audit log (verify and checkpoint: on the database)."),
    "schema": _api("schemas:app", "Print JSON Schemas of workflow documents and step configs."),
    "login": _api("profile:login", "Save a server URL and API token for later commands."),
    "logout": _api("profile:logout", "Forget the saved server and token."),
    "serve": _db("server:serve", "Run the API, an embedded worker and the scheduler."),
    "worker": _db("worker:worker", "Run a worker process that advances runs.", WORKER_NEVER_USES),
    "scheduler": _db("server:scheduler", "Run the scheduler (leader-elected)."),
    "migrate": _db("server:migrate", "Apply database migrations up to the newest."),
    "demo": _db("server:demo", "Migrate and create the demo workspace unless it exists."),
    "keys": _db("keys:app", "Manage the master key."),
    "config": _db("server:config_app", "Inspect the configuration."),
    "backup": _db("backup:backup", "Back up the SQLite database (online, while Grantflow runs)."),
    "restore": _db("backup:restore", "Restore a SQLite backup (Grantflow stopped)."),
}


class Root(LazyGroup):
    lazy = COMMANDS


app = typer.Typer(
    cls=Root,
    name="grantflow",
    help="Grantflow: access automation and identity-lifecycle workflows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    rich_markup_mode=None,  # plain help for the root: see LazyGroup.format_commands
)


def _version(shown: bool) -> None:
    if shown:
        typer.echo(f"grantflow {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    url: str = typer.Option(
        None,
        "--url",
        metavar="URL",
        help="a Grantflow server to talk to (default GRANTFLOW_URL, else the `grantflow login` "
        "profile, else the local database)",
    ),
    token: str = typer.Option(
        None,
        "--token",
        metavar="TOKEN",
        help="the API token (default GRANTFLOW_TOKEN or the profile)",
    ),
    local: bool = typer.Option(
        False, "--local", help="use the local database even when a server is configured"
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    """Grantflow: access automation and identity-lifecycle workflows.

    Data commands go through the API: of the server given by --url, GRANTFLOW_URL (with
    GRANTFLOW_TOKEN) or `grantflow login`, or else of the app run inside this command on the
    local database (GRANTFLOW_DATABASE_URL)."""
    OPTIONS.url = url
    OPTIONS.token = token
    OPTIONS.local = local


def main() -> None:
    collector.pause()
    try:
        app()
    finally:
        collector.resume()
