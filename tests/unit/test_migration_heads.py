"""The cheap revision checks (scripts read as text) agree with Alembic's own reading."""

from __future__ import annotations

from alembic.config import Config
from alembic.script import ScriptDirectory

from grantflow.store import migrate


def _alembic_scripts() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(migrate.MIGRATIONS))
    return ScriptDirectory.from_config(config)


def test_the_head_read_from_the_scripts_is_alembics_head() -> None:
    """`head_revision` names the one head Alembic finds, so `grantflow` commands that compare a
    database with it ask for `grantflow migrate` exactly when Alembic would migrate."""
    scripts = _alembic_scripts()
    assert migrate.head_revision() == scripts.get_current_head()
    assert migrate.head_revision() is not None


def test_every_shipped_revision_is_known() -> None:
    """`known_revisions` is the set Alembic walks (a database at any other one is newer)."""
    walked = {script.revision for script in _alembic_scripts().walk_revisions()}
    assert migrate.known_revisions() == walked
