"""Backups of a SQLite database through SQLite's online backup API, and their restore.

The backup API copies a consistent snapshot while Grantflow keeps running: in WAL mode a reader
never blocks the writers, and the whole copy is taken in one step, so it is the database as it
was at one commit. A backup is one self-contained SQLite file (no `-wal` beside it), written
under a temporary name and renamed when complete, so a crash never leaves half a backup under
the name asked for.

A restore writes through the same API into the database Grantflow uses, which handles its WAL
correctly (copying files over it would not). It is refused while a Grantflow process works on
that database, over a database that already holds a workspace unless asked to replace it, and
when the master keys the backup's credentials and audit chain were written under are not
configured — without them the credentials cannot be read again.

PostgreSQL is backed up with `pg_dump -Fc` and restored with `pg_restore` (docs: how-to/backup);
both functions here refuse it with the commands to use.

Reads the tables by name in SQL (this package imports no subsystem): `alembic_version`,
`credentials.key_id`, `audit_entries.key_id`, `workers.heartbeat_at`, `scheduler_leases`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import URL

from grantflow.errors import ConfigurationError, Conflict, NotFound, ValidationError
from grantflow.store.database import Database

# a process counts as running when it heartbeat this recently (workers beat every 10 s)
LIVE_WITHIN = dt.timedelta(seconds=60)
COUNTED = ("users", "workflows", "runs", "credentials", "audit_entries")


@dataclass(frozen=True)
class Snapshot:
    """What a Grantflow SQLite file holds, as far as a backup or a restore needs to say."""

    revision: str | None
    counts: dict[str, int]
    key_ids: list[str]  # master keys its credentials and audit entries were written under


@dataclass(frozen=True)
class BackupReport:
    path: Path
    bytes: int
    sha256: str
    snapshot: Snapshot


@dataclass(frozen=True)
class RestoreReport:
    path: Path  # the database restored into
    source: Path
    sha256: str
    snapshot: Snapshot
    missing_keys: list[str] = field(default_factory=list)  # accepted as lost


def backup_sqlite(database: Database, to: Path, *, overwrite: bool = False) -> BackupReport:
    """Copy the live SQLite database to `to` (one file, checked, renamed into place)."""
    source = _sqlite_path(database, "back up")
    if to.exists() and not overwrite:
        raise Conflict(
            f"{to} already exists",
            next_action="choose another file name, or pass --overwrite to replace it",
        )
    if not to.parent.is_dir():
        raise NotFound(f"the directory {to.parent} does not exist", next_action="create it first")
    partial = to.with_name(f".{to.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        with _connect(source) as src, _connect(partial) as dst:
            src.backup(dst)  # pages=-1: one step, one consistent snapshot
            dst.execute("PRAGMA journal_mode=DELETE")  # self-contained: no -wal file beside it
            _check_integrity(dst, partial)
            snapshot = _snapshot(dst)
        _fsync(partial)
        os.replace(partial, to)
    finally:
        partial.unlink(missing_ok=True)
    return BackupReport(to, to.stat().st_size, _sha256(to), snapshot)


def inspect_backup(path: Path, known_revisions: set[str]) -> Snapshot:
    """Check that `path` is a sound Grantflow backup this version can restore."""
    if not path.is_file():
        raise NotFound(f"no backup file at {path}")
    try:
        with _connect(path, read_only=True) as conn:
            _check_integrity(conn, path)
            snapshot = _snapshot(conn)
    except sqlite3.DatabaseError as exc:
        raise ValidationError(
            f"{path} cannot be read as a SQLite database ({exc})",
            next_action="give the file `grantflow backup` wrote; a PostgreSQL dump is restored "
            "with pg_restore",
        ) from None
    if snapshot.revision is None:
        raise ValidationError(
            f"{path} is a SQLite database but not a Grantflow one (it has no schema revision)"
        )
    if snapshot.revision not in known_revisions:
        raise ValidationError(
            f"{path} is at schema revision {snapshot.revision}, which this Grantflow does not "
            "know: it was written by a newer version",
            next_action="restore it with the Grantflow version that wrote it (or a newer one)",
        )
    return snapshot


def restore_sqlite(
    database: Database,
    source: Path,
    *,
    known_revisions: set[str],
    available_key_ids: set[str],
    replace: bool = False,
    accept_missing_keys: bool = False,
) -> RestoreReport:
    """Replace the database's content with the backup at `source`, after every check."""
    target = _sqlite_path(database, "restore")
    snapshot = inspect_backup(source, known_revisions)
    missing = sorted(set(snapshot.key_ids) - available_key_ids)
    if missing and not accept_missing_keys:
        raise ConfigurationError(
            f"the backup's credentials ({snapshot.counts['credentials']}) and audit chain were "
            f"written under master key(s) {', '.join(missing)}, which the configured key file "
            "does not hold: without them every credential in the backup is lost",
            next_action="restore the key file from its backup first (GRANTFLOW_SECRET_KEY_FILE), "
            "then run the restore again; or pass --accept-missing-keys and set every "
            "credential again afterwards",
        )
    if target.exists():
        _refuse_if_in_use(target, replace)
    target.parent.mkdir(parents=True, exist_ok=True)
    database.dispose()  # this process's own pooled connections see the new content afresh
    with _connect(source, read_only=True) as src, _connect(target) as dst:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=WAL")  # the mode Grantflow runs SQLite in
        _check_integrity(dst, target)
    return RestoreReport(target, source, _sha256(source), snapshot, missing)


# --- checks -----------------------------------------------------------------------------------
def _refuse_if_in_use(target: Path, replace: bool) -> None:
    with _connect(target) as conn:
        tables = _tables(conn)
        now = dt.datetime.now(dt.UTC)
        live: list[str] = []
        if "workers" in tables:
            for worker, heartbeat in conn.execute("SELECT id, heartbeat_at FROM workers"):
                if heartbeat and now - _utc(heartbeat) < LIVE_WITHIN:
                    live.append(f"worker {worker}")
        if "scheduler_leases" in tables:
            for holder, expires in conn.execute("SELECT holder, expires_at FROM scheduler_leases"):
                if expires and _utc(expires) > now:
                    live.append(f"scheduler {holder}")
        held = _counts(conn, tables)
    if live:
        raise Conflict(
            f"Grantflow is running on {target} ({'; '.join(live)})",
            next_action="stop every grantflow serve, worker and scheduler on this database, "
            "then restore",
        )
    if any(held.values()) and not replace:
        raise Conflict(
            f"{target} already holds a Grantflow workspace ({_describe(held)}): restoring "
            "replaces all of it",
            next_action="pass --replace to replace it (back it up first if it may be needed)",
        )


def _check_integrity(conn: sqlite3.Connection, path: Path) -> None:
    result = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    if result != ["ok"]:
        raise ValidationError(
            f"{path} failed SQLite's integrity check: {'; '.join(map(str, result[:3]))}",
            next_action="use another backup",
        )


def _snapshot(conn: sqlite3.Connection) -> Snapshot:
    tables = _tables(conn)
    revision = None
    if "alembic_version" in tables:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        revision = row[0] if row else None
    key_ids: set[str] = set()
    for table in ("credentials", "audit_entries"):
        if table in tables:
            key_ids |= {
                r[0] for r in conn.execute(f"SELECT DISTINCT key_id FROM {table}") if r[0]
            }  # (table names from the tuple above, never from input)
    return Snapshot(revision, _counts(conn, tables), sorted(key_ids))


def _counts(conn: sqlite3.Connection, tables: set[str]) -> dict[str, int]:
    return {
        t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] if t in tables else 0
        for t in COUNTED
    }


def _describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {t.replace('_', ' ')}" for t, n in counts.items() if n)


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


# --- files and connections ----------------------------------------------------------------
def require_sqlite(url: URL, verb: str) -> None:
    """Refuse a PostgreSQL database before anything connects to it, naming the pg_dump or
    pg_restore command that does the job there (`verb`: "back up" or "restore")."""
    if url.get_backend_name() != "sqlite":
        hint = _pg_dump_hint(url) if verb == "back up" else _pg_restore_hint(url)
        raise ConfigurationError(
            f"`grantflow {'backup' if verb == 'back up' else verb}` works on SQLite; this "
            "database is PostgreSQL",
            next_action=hint,
        )


def _sqlite_path(database: Database, verb: str) -> Path:
    if database.dialect != "sqlite":
        require_sqlite(database.url, verb)
    name = database.url.database
    if not name or name == ":memory:":
        raise ConfigurationError(f"an in-memory database cannot be {verb}d; use a file")
    return Path(name)


def _pg_dump_hint(url: URL) -> str:
    return (
        f"back it up with pg_dump: pg_dump -Fc -d '{_libpq(url)}' -f grantflow.dump "
        "(and keep a copy of the key file apart from it; see the backup guide)"
    )


def _pg_restore_hint(url: URL) -> str:
    return (
        "restore into an empty database with pg_restore: pg_restore --no-owner -d "
        f"'{_libpq(url)}' grantflow.dump, then `grantflow migrate` and `grantflow audit verify` "
        "(see the backup guide)"
    )


def _libpq(url: URL) -> str:
    """The URL as libpq takes it (no driver suffix, none of the options only Grantflow and its
    driver read), the password left out."""
    plain = url.set(drivername="postgresql")
    plain = plain.difference_update_query(["prepare_threshold", "flush_every_step"])
    return plain.render_as_string(hide_password=True).replace(":***@", "@")


@contextlib.contextmanager
def _connect(path: Path, *, read_only: bool = False) -> Iterator[sqlite3.Connection]:
    uri = path.resolve().as_uri() + ("?mode=ro" if read_only else "")
    conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        yield conn
    finally:
        conn.close()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _utc(value: object) -> dt.datetime:
    """A time as SQLite holds it (ISO text, naive means UTC)."""
    parsed = dt.datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
