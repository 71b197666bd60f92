"""For the commands that open the database themselves (never through the API): running the
processes (`serve`, `worker`, `scheduler`), setting it up (`migrate`, `demo`, `users
create-admin`), the master key (`keys rotate`) and the audit chain (`audit verify`,
`audit checkpoint`). Every other command goes through `grantflow.cli.client`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from grantflow.cli import collector
from grantflow.cli.context import fail
from grantflow.config import Settings, load_settings, master_keys
from grantflow.errors import ConfigurationError
from grantflow.logging import configure_logging
from grantflow.redaction import redact_url
from grantflow.store import migrate as migrations
from grantflow.store.database import Database, open_database


def settings(log_level: str | None = "warning") -> Settings:
    """Load settings or stop with one line naming the bad variable."""
    try:
        loaded = load_settings()
    except ConfigurationError as exc:
        fail(exc)
    configure_logging(log_level or loaded.log_level, loaded.log_format)
    return loaded


NEXT = (
    "set GRANTFLOW_DATABASE_URL to Grantflow's database and run `grantflow migrate` once (or "
    "use a server: GRANTFLOW_URL and GRANTFLOW_TOKEN)"
)


def open_checked(settings: Settings, *, migrated: bool = True) -> Database:
    """The configured database, or one error line when it is missing (a SQLite file that does
    not exist is not created), unreachable or, with `migrated`, not at the newest migration."""
    url = settings.database
    shown = redact_url(str(settings.database_url))
    file = url.database if url.get_backend_name() == "sqlite" else None
    if file not in (None, "", ":memory:") and not Path(str(file)).exists():
        raise ConfigurationError(
            f"no Grantflow database at {shown} (GRANTFLOW_DATABASE_URL): the file does not exist",
            next_action=NEXT,
        )
    db = open_database(url)
    db.use_master_keys(lambda: master_keys(settings))
    collector.resume()  # (loaded: what follows is the command's own work)
    if not migrated:
        return db
    try:
        current = migrations.current_revision(db)
        newest = migrations.head_revision(db)
    except DBAPIError as exc:
        db.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise ConfigurationError(
            f"cannot open the database {shown} (GRANTFLOW_DATABASE_URL): {reason}",
            next_action=NEXT,
        ) from None
    if current != newest:
        db.dispose()
        state = "has no Grantflow schema" if current is None else f"is at migration {current}"
        raise ConfigurationError(
            f"the database {shown} (GRANTFLOW_DATABASE_URL) {state}; this Grantflow needs {newest}",
            next_action="run `grantflow migrate` (or set GRANTFLOW_DATABASE_URL to the right "
            "database)",
        )
    return db


@contextlib.contextmanager
def database(loaded: Settings | None = None, *, migrated: bool = True) -> Iterator[Database]:
    """The configured database; one error line when it is missing or (with `migrated`) not
    migrated. `migrate` and `demo` create it, so they pass `migrated=False`."""
    loaded = loaded or settings()
    if migrated:
        db = open_checked(loaded)
    else:
        db = open_database(loaded.database)
        db.use_master_keys(lambda: master_keys(loaded))
        collector.resume()
    try:
        yield db
    finally:
        db.dispose()
