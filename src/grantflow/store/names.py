"""Case-insensitive names the same way on SQLite and PostgreSQL.

SQLite's `lower()` folds ASCII only, so `Émile` and `émile` were two applications there and one on
PostgreSQL. Each named table keeps `name_key`, the Unicode caseless form of its name (canonical
caseless matching: NFD, case fold, NFD), set whenever the name is set; uniqueness and look-ups by
name use the key, never the database's own `lower()`.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column, validates


def name_key(name: str) -> str:
    """The form two names share when they differ only in case (or in composed accents)."""
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", name).casefold())


class NameKeyed:
    """Mixin for a table whose names may repeat: keeps `name_key` (indexed) in step with `name`."""

    # case folding can lengthen a name ("ß" -> "ss"), and NFD splits accents off their letters
    name_key: Mapped[str] = mapped_column(String(400), index=True)

    @validates("name")
    def _keep_name_key(self, _key: str, value: Any) -> Any:
        if isinstance(value, str):
            self.name_key = name_key(value)
        return value


class UniqueNameKeyed(NameKeyed):
    """Mixin for a table whose names are unique regardless of case."""

    name_key: Mapped[str] = mapped_column(String(400), unique=True)
