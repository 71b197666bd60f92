"""Words for an unexpected error that are safe to keep on a record and show to its readers: a
database error by its driver's first line, never the statement and parameters SQLAlchemy adds
(they hold the row's data: a person's attributes), nor the driver's DETAIL lines (key values),
nor the value a data error quotes in that first line (`invalid input syntax for type integer:
"…"`)."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, StatementError

from grantflow.errors import GrantflowError

_LONGEST = 500


def fault_text(exc: BaseException) -> str:
    if isinstance(exc, GrantflowError):
        return exc.message[:_LONGEST]
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        lines = str(exc.orig).strip().splitlines()
        first = lines[0] if lines else ""
        if str(getattr(exc.orig, "sqlstate", None) or "").startswith("22") and '"' in first:
            # a data exception quotes the value it refused, unescaped (quotes, a line break
            # inside): everything from the first quote on goes
            first = first[: first.index('"')] + '"…"'
        return f"{type(exc.orig).__name__}: {first}"[:_LONGEST]
    if isinstance(exc, StatementError):
        return type(exc).__name__
    return f"{type(exc).__name__}: {exc}"[:_LONGEST]
