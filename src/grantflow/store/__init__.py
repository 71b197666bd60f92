"""Persistence: the database class (SQLite and PostgreSQL hooks), the schema, migrations.

May import `grantflow.config` and `grantflow.errors` only; every subsystem imports from here.
"""

from __future__ import annotations

from grantflow.store.base import Base, JSONType, UTCDateTime, new_id, utcnow
from grantflow.store.database import Database, open_database

__all__ = ["Base", "Database", "JSONType", "UTCDateTime", "new_id", "open_database", "utcnow"]
