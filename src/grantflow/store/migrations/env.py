"""Alembic environment: runs online against the engine handed over by `grantflow.store.migrate`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from grantflow.store.schema import metadata

config = context.config
engine = config.attributes.get("engine") or create_engine(
    config.get_main_option("sqlalchemy.url", "")
)

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    context.run_migrations()
