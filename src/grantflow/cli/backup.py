"""`grantflow backup --to FILE` and `grantflow restore --from FILE`: SQLite through its online
backup API (direct database access, like `migrate`); PostgreSQL is refused with the pg_dump /
pg_restore commands to use. The logic lives in `grantflow.store.backup`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from grantflow import audit
from grantflow.auth.actor import Actor
from grantflow.cli.context import JSON_OPTION, emit_json, err, errors_as_lines, out
from grantflow.cli.direct import database
from grantflow.cli.direct import settings as load
from grantflow.cli.server import upgrade_schema
from grantflow.config import Settings, master_keys
from grantflow.connections.crypto import key_id
from grantflow.store import backup as backups
from grantflow.store import migrate as migrations

CLI = Actor.system("cli")


def _key_source(loaded: Settings) -> str:
    if loaded.secret_key is not None:
        return "the value of GRANTFLOW_SECRET_KEY"
    return f"the key file {loaded.secret_key_file.resolve()}"


def _available_key_ids(loaded: Settings) -> set[str]:
    """The ids of the configured master keys; none when no key is configured (never generates
    a key file: a fresh key would open nothing in a backup)."""
    if loaded.secret_key is None and not loaded.secret_key_file.exists():
        return set()
    return {key_id(k) for k in master_keys(loaded)}


def _holds(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {table.replace('_', ' ')}" for table, n in counts.items())


def backup(
    to: Path = typer.Option(..., "--to", help="the backup file to write (one SQLite file)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace FILE if it exists"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Copy the SQLite database to FILE with SQLite's online backup API (safe while Grantflow
    runs). Back up the master key file too: without it the credentials are lost. PostgreSQL:
    use pg_dump -Fc (the command is printed)."""
    loaded = load()
    with errors_as_lines():
        backups.require_sqlite(loaded.database, "back up")  # before connecting to it
    with errors_as_lines(), database(loaded) as db:
        report = backups.backup_sqlite(db, to, overwrite=overwrite)
        missing = sorted(set(report.snapshot.key_ids) - _available_key_ids(loaded))
    snapshot = report.snapshot
    if as_json:
        emit_json(
            {
                "path": str(report.path),
                "bytes": report.bytes,
                "sha256": report.sha256,
                "revision": snapshot.revision,
                "counts": snapshot.counts,
                "key_ids": snapshot.key_ids,
                "missing_keys": missing,
                "key_source": _key_source(loaded),
            }
        )
    else:
        out.print(
            f"backed up {db.url.database} to {report.path}: {report.bytes} bytes, "
            f"schema {snapshot.revision}, sha256 {report.sha256}",
            markup=False,
        )
        out.print(f"  holds {_holds(snapshot.counts)}", markup=False)
    # on stderr, with --json too: the one thing a backup cannot carry
    err.print(
        f"KEEP A COPY OF THE MASTER KEY, {_key_source(loaded)} (key "
        f"{', '.join(snapshot.key_ids) or 'none used yet'}), apart from this backup: without "
        f"it the {snapshot.counts['credentials']} credential(s) in the backup cannot be "
        "decrypted and the audit chain cannot be verified.",
        markup=False,
    )
    if missing:
        err.print(
            f"warning: the backup names master key(s) {', '.join(missing)} that are not "
            "configured here: find the key file that holds them",
            markup=False,
        )


def restore(
    source: Path = typer.Option(..., "--from", help="a file `grantflow backup` wrote"),
    replace: bool = typer.Option(
        False, "--replace", help="replace a database that already holds a workspace"
    ),
    accept_missing_keys: bool = typer.Option(
        False,
        "--accept-missing-keys",
        help="restore although the master key the backup needs is not configured "
        "(its credentials are then lost: set each again)",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Replace the SQLite database's content with a backup, once every Grantflow process on it
    has stopped; then migrate it and record the restore in the audit log. PostgreSQL: use
    pg_restore (the command is printed)."""
    loaded = load()
    with errors_as_lines():
        backups.require_sqlite(loaded.database, "restore")  # before connecting to it
    # (into a new, empty place too: the restore brings the schema with it)
    with errors_as_lines(), database(loaded, migrated=False) as db:
        report = backups.restore_sqlite(
            db,
            source,
            known_revisions=migrations.known_revisions(),
            available_key_ids=_available_key_ids(loaded),
            replace=replace,
            accept_missing_keys=accept_missing_keys,
        )
        revision = report.snapshot.revision
        recorded = False
        if not report.missing_keys:  # (an entry signed under another key would not chain)
            upgrade_schema(db)
            with db.transaction() as session:
                audit.record(session, CLI, "database.restored", "database", None, _summary(report))
            recorded = True
        head = migrations.current_revision(db) if recorded else revision
    if as_json:
        emit_json({**_summary(report), "revision_now": head, "audit_recorded": recorded})
        return
    out.print(
        f"restored {source} (schema {revision}, sha256 {report.sha256}) into {report.path}",
        markup=False,
    )
    out.print(f"  holds {_holds(report.snapshot.counts)}", markup=False)
    if head != revision:
        out.print(f"  migrated to schema {head}", markup=False)
    if report.missing_keys:
        err.print(
            f"warning: master key(s) {', '.join(report.missing_keys)} are not configured: "
            "the credentials restored cannot be decrypted (set each again) and the audit chain "
            "will not verify; the restore is not in the audit log",
            markup=False,
        )
    out.print(
        "  next: start Grantflow; check with `grantflow audit verify` and "
        "`grantflow connections test APP NAME`; write a new audit checkpoint "
        "(`grantflow audit checkpoint`): those taken after the backup no longer match",
        markup=False,
    )


def _summary(report: backups.RestoreReport) -> dict[str, Any]:
    return {
        "path": str(report.path),
        "source": str(report.source),
        "sha256": report.sha256,
        "revision": report.snapshot.revision,
        "counts": report.snapshot.counts,
        "key_ids": report.snapshot.key_ids,
        "missing_keys": report.missing_keys,
    }


def register(app: typer.Typer) -> None:
    app.command()(backup)
    app.command()(restore)
