"""Alembic, driven from code: the migration scripts ship inside the package.

Only `upgrade` needs Alembic itself (imported there): the checks every command and probe makes —
which revision a database is at, which is the newest shipped — read the `alembic_version`
table and the scripts' `revision = "…"` lines directly, so a CLI command or `/readyz` does not
pay for importing Alembic and every migration script.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text

from grantflow.store.database import Database

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
_REVISION = re.compile(r'^revision\s*=\s*["\']([^"\']+)["\']', re.MULTILINE)
_DOWN_REVISION = re.compile(r'^down_revision\s*=\s*["\']([^"\']+)["\']', re.MULTILINE)


def alembic_config(database: Database) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # env.py uses this engine rather than building one from a URL.
    config.attributes["engine"] = database.engine
    return config


def upgrade(database: Database, revision: str = "head") -> None:
    """Apply every migration up to `revision`; a no-op when already there."""
    from alembic import command

    command.upgrade(alembic_config(database), revision)


def current_revision(database: Database) -> str | None:
    """The revision recorded in the database; None when it was never migrated."""
    with database.engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        found = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return found[0] if len(found) == 1 else None


@functools.cache
def _revisions() -> tuple[frozenset[str], str | None]:
    """Every shipped revision and the head (the one no other revises), from the scripts' text."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for script in (MIGRATIONS / "versions").glob("*.py"):
        source = script.read_text(encoding="utf-8")
        found = _REVISION.search(source)
        if found is None:
            continue
        revisions.add(found.group(1))
        down = _DOWN_REVISION.search(source)
        if down is not None:
            revised.add(down.group(1))
    heads = revisions - revised
    return frozenset(revisions), (heads.pop() if len(heads) == 1 else None)


def head_revision(database: Database | None = None) -> str | None:
    """The newest shipped revision (`database` is accepted for symmetry; it is not read)."""
    return _revisions()[1]


def is_up_to_date(database: Database) -> bool:
    return current_revision(database) == head_revision(database)


def known_revisions() -> set[str]:
    """Every revision the shipped migrations define (a database at another one is newer)."""
    return set(_revisions()[0])
