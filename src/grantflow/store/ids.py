"""Finding rows by id: many at once (`by_ids`), or by a unique prefix, which stands for the
whole id as in git: `0190f2a3-7c` for the run it starts.

Every `get_*` look-up calls `by_prefix` only after the exact id (and, where a resource has one,
its name) found nothing, so a full id costs nothing extra. A prefix shorter than
`MIN_PREFIX` characters is refused (it would match too much to be meant), and one that matches
several rows is refused with the candidates listed, so a command never acts on a guess.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from grantflow.errors import BadRequest, Conflict

MIN_PREFIX = 4
FULL_ID_LENGTH = 36  # a UUID's text form: every id Grantflow generates
_SHOWN = 5  # candidates named in the refusal of an ambiguous prefix
_PREFIX = re.compile(r"^[0-9a-f][0-9a-f-]*$")

T = TypeVar("T")


def looks_like_prefix(raw: str) -> bool:
    """Could `raw` be the start of a generated id (hex digits and dashes, shorter than one)?"""
    return len(raw) < FULL_ID_LENGTH and bool(_PREFIX.match(raw.lower()))


def by_prefix(
    session: Session,
    model: type[T],
    raw: str,
    noun: str,
    *,
    lock: bool = False,
    named: bool = False,
) -> T | None:
    """The one row of `model` whose id starts with `raw`; None when no id does (the caller
    says "not found" in its own words). `named`: `raw` may have been a name, so a short one
    is simply not found rather than refused as a prefix."""
    prefix = raw.strip().lower()
    if not looks_like_prefix(prefix):
        return None
    if len(prefix) < MIN_PREFIX:
        if named:
            return None
        raise BadRequest(
            f"{noun} id {raw!r} is too short: an id prefix needs at least {MIN_PREFIX} characters",
            next_action="give more characters of the id (or the whole id)",
            code="id_prefix_too_short",
        )
    column: Any = model.id  # type: ignore[attr-defined]
    found = list(
        session.execute(
            select(column).where(column.like(f"{prefix}%")).order_by(column).limit(_SHOWN + 1)
        ).scalars()
    )
    if not found:
        return None
    if len(found) > 1:
        shown = ", ".join(found[:_SHOWN]) + (", …" if len(found) > _SHOWN else "")
        raise Conflict(
            f"{noun} id prefix {raw!r} is ambiguous: it matches {shown}",
            next_action="give more characters of the id (or the whole id)",
            code="ambiguous_id",
            candidates=found[:_SHOWN],
        )
    return session.get(model, found[0], with_for_update=lock or None, populate_existing=lock)


def by_ids(session: Session, model: Any, ids: set[str]) -> dict[str, Any]:
    """Rows of `model` by id, in one statement (an id not found is absent: deleted). A page
    reads what its rows name this way, not a statement per row. The caller holds them while it
    uses them: the session keeps only objects something refers to."""
    if not ids:
        return {}
    return {o.id: o for o in session.execute(select(model).where(model.id.in_(ids))).scalars()}
