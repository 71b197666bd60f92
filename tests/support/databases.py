"""Per-run databases: a migrated SQLite template file copied per test, and a PostgreSQL database
created for the run (migrated once, truncated between tests, dropped at the end)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError

from grantflow.store import migrate
from grantflow.store.database import Database, open_database
from grantflow.store.schema import metadata
from tests.support.services import POSTGRES_ADMIN_URL, service_missing


def sqlite_template(directory: Path) -> Path:
    path = directory / "template.db"
    db = open_database(make_url(f"sqlite:///{path}"))
    migrate.upgrade(db)
    db.engine.dispose()
    return path


def sqlite_copy(template: Path, directory: Path) -> Database:
    target = directory / "grantflow.db"
    shutil.copyfile(template, target)
    return open_database(make_url(f"sqlite:///{target}"))


class PostgresRun:
    """One database on the local server for the whole test run."""

    def __init__(self) -> None:
        self.admin_url = make_url(POSTGRES_ADMIN_URL)
        self.name = f"grantflow_test_{uuid.uuid4().hex[:12]}"
        self.url: URL = self.admin_url.set(database=self.name)
        self._emptying: str | None = None  # the statements `fresh` sends, built once

    def _admin(self) -> Iterator[object]:
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                yield conn
        finally:
            engine.dispose()

    def create(self, *, migrated: bool = True) -> None:
        """Create the database, and migrate it to the newest revision unless told not to."""
        try:
            for conn in self._admin():
                conn.execute(text(f'CREATE DATABASE "{self.name}"'))  # type: ignore[attr-defined]
        except OperationalError as exc:
            service_missing("PostgreSQL", str(exc.orig).splitlines()[0])
        if not migrated:
            return
        db = open_database(self.url)
        migrate.upgrade(db)
        db.engine.dispose()

    def drop(self) -> None:
        for conn in self._admin():
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))  # type: ignore[attr-defined]

    def fresh(self) -> Database:
        """The run's database, emptied: DELETE rather than TRUNCATE, which gives every table
        new files (ten times slower on these small tables: seconds per test on a loaded
        machine). The replica role skips the audit log's refusal and the foreign-key checks."""
        db = open_database(self.url)
        with db.engine.begin() as conn:
            if self._emptying is None:
                sequences = conn.execute(
                    text(
                        "SELECT sequence_name FROM information_schema.sequences "
                        "WHERE sequence_schema = current_schema()"
                    )
                ).scalars()
                self._emptying = "; ".join(
                    ["SET LOCAL session_replication_role = replica"]
                    + [f'DELETE FROM "{t.name}"' for t in reversed(metadata.sorted_tables)]
                    + [f'ALTER SEQUENCE "{name}" RESTART' for name in sequences]
                )
            conn.exec_driver_sql(self._emptying)
        return db


def kill_connections(database: Database) -> int:
    """Terminate every server connection to the test database (what a restart does)."""
    admin = create_engine(database.url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            killed = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": database.url.database},
            ).scalar_one()
    finally:
        admin.dispose()
    return int(killed)


@contextmanager
def unmigrated(dialect: str, directory: Path) -> Iterator[Database]:
    """A database of its own, never migrated (SQLite in `directory`, or PostgreSQL), dropped
    afterwards: for tests of a migration's upgrade and downgrade."""
    if dialect == "sqlite":
        db = open_database(make_url(f"sqlite:///{directory / 'unmigrated.db'}"))
        try:
            yield db
        finally:
            db.dispose()
        return
    run = PostgresRun()
    run.create(migrated=False)
    db = open_database(run.url)
    try:
        yield db
    finally:
        db.dispose()
        run.drop()
