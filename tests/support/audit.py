"""Audit-log tampering as someone with write access to the database would do it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from grantflow import audit
from grantflow.audit.checkpoints import Checkpoint
from grantflow.audit.models import AuditEntry
from grantflow.store.database import Database

SQLITE_TRIGGERS = {
    verb: f"CREATE TRIGGER audit_entries_no_{verb.lower()} BEFORE {verb} ON audit_entries "
    "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
    for verb in ("UPDATE", "DELETE")
}


def entries(database: Database) -> list[AuditEntry]:
    with database.transaction() as session:
        return list(session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars())


def verify(database: Database, against: list[Checkpoint] | None = None) -> audit.ChainReport:
    with database.transaction() as session:
        return audit.verify(session, against or [])


@contextmanager
def triggers_off(database: Database) -> Iterator[Session]:
    """A committed transaction in which the append-only triggers do not fire, and which leaves
    them in place afterwards (as a careful DBA would): PostgreSQL's replica role, SQLite's
    triggers dropped and created again."""
    with database.transaction() as session:
        if database.dialect == "sqlite":
            for verb in SQLITE_TRIGGERS:
                session.execute(text(f"DROP TRIGGER audit_entries_no_{verb.lower()}"))
            yield session
            for sql in SQLITE_TRIGGERS.values():
                session.execute(text(sql))
        else:
            session.execute(text("SET LOCAL session_replication_role = replica"))
            yield session


@contextmanager
def rolled_back(database: Database) -> Iterator[Session]:
    """A transaction that is rolled back at the end (PostgreSQL DDL too): for damage that must
    not outlive the test on the run's shared PostgreSQL database."""
    with database.sessions() as session:
        session.begin()
        session.info["database"] = database
        try:
            yield session
        finally:
            session.rollback()
