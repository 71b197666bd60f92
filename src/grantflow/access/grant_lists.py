"""Grants as the lists show them (the API's list, the console's, an identity's page): each with
who holds it, its application's name and its automation chip, read for a whole page at once.
The chip filter is applied while paging, reading at most `MOST_READ` grants a request: a page
is full unless the grants ran out or that many were read first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from grantflow.access.automation import (
    Automation,
    AutomationState,
    automation,
    automations,
    may_have,
)
from grantflow.access.grants import GrantStatus
from grantflow.access.models import Application, Grant, Identity
from grantflow.store.pagination import Page, decode_cursor, encode_cursor

# The most grants read in a batch while filtering by chip: the chip is derived from runs, so
# the grants that have it are found by reading grants in order until a page of them is found.
_SCAN = 500
# The most grants a filtered request reads (at least the page and one): without a bound, a chip
# that few grants have, or none, read every grant in one request (100,000: 20 s). About what ten
# of the largest unfiltered pages cost (0.65 s on PostgreSQL; 13 growing batches at the default
# page); a chip held by one grant in a hundred fills the default page of 50 on average
# (docs/explanation/benchmarks.md).
MOST_READ = 5_000


@dataclass(frozen=True)
class Holder:
    """The identity a grant is for, as a list names it."""

    email: str | None
    display_name: str


@dataclass(frozen=True)
class Listed:
    """A grant as a list shows it."""

    grant: Grant
    chip: AutomationState
    holder: Holder | None  # None: the identity is gone
    application: str | None  # the application's name; None: it is gone


def list_grants(
    session: Session,
    *,
    identity_id: str | None = None,
    application_id: str | None = None,
    status: GrantStatus | None = None,
    automation: Automation | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[Listed]:
    """Grants in id order (oldest first), `limit` a page; with `automation`, only the grants
    with that chip: a page holds `limit` of them unless no more match or `MOST_READ` grants
    were read first. Then the page is short, even empty, and its cursor is the last grant
    read, so the next page reads on from there; the cursor is None once every grant is read."""
    stmt = select(Grant.id)
    if identity_id:
        stmt = stmt.where(Grant.identity_id == identity_id)
    if application_id:
        stmt = stmt.where(Grant.application_id == application_id)
    if status:
        stmt = stmt.where(Grant.status == status)
    found, stopped = _scan(session, stmt, automation, decode_cursor(cursor, str), limit)
    page = dict(list(found.items())[:limit])
    if len(found) > limit:
        stopped = list(page)[-1]
    return Page(_listed(session, page), None if stopped is None else encode_cursor(stopped))


def _scan(
    session: Session, stmt: Any, wanted: Automation | None, after: str | None, limit: int
) -> tuple[dict[str, AutomationState], str | None]:
    """The chips of up to `limit` + 1 grants of `stmt` (grant ids) after `after`, in id order,
    whose chip is `wanted` (any chip: None), and the last grant read if it stopped reading
    before the grants ended (None: they did). Unfiltered, one batch of `limit` + 1 is all it
    reads; filtered, it reads batches (twice as many grants each time, up to `_SCAN`) until it
    has them, the grants end or it read `MOST_READ`, of the grants that may have the chip
    when SQL can tell (`may_have`)."""
    if wanted is not None and (candidates := may_have(wanted)) is not None:
        stmt = stmt.where(candidates)
    batch, most = limit + 1, max(limit + 1, _SCAN)
    unread = max(limit + 1, MOST_READ)
    found: dict[str, AutomationState] = {}
    while True:
        later = stmt if after is None else stmt.where(Grant.id > after)
        ids = list(session.execute(later.order_by(Grant.id).limit(batch)).scalars())
        chips = automations(session, ids)
        found.update((i, chips[i]) for i in ids if wanted is None or chips[i].state == wanted)
        if len(ids) < batch:
            return found, None
        after, unread = ids[-1], unread - batch
        if len(found) > limit or not unread:
            return found, after
        batch = min(2 * batch, most, unread)


def _listed(session: Session, chips: dict[str, AutomationState]) -> list[Listed]:
    """The grants of `chips`, in its order, each with its holder and application's name: three
    statements for the page."""
    if not chips:
        return []
    grants = {
        g.id: g for g in session.execute(select(Grant).where(Grant.id.in_(list(chips)))).scalars()
    }
    holders = _holders(session, {g.identity_id for g in grants.values()})
    names = _names(session, {g.application_id for g in grants.values()})
    return [
        Listed(grant, chip, holders.get(grant.identity_id), names.get(grant.application_id))
        for grant_id, chip in chips.items()
        if (grant := grants.get(grant_id)) is not None
    ]


def _holders(session: Session, identity_ids: set[str]) -> dict[str, Holder]:
    rows = session.execute(
        select(Identity.id, Identity.email, Identity.display_name).where(
            Identity.id.in_(identity_ids)
        )
    )
    return {row.id: Holder(row.email, row.display_name) for row in rows}


def _names(session: Session, application_ids: set[str]) -> dict[str, str]:
    rows = session.execute(
        select(Application.id, Application.name).where(Application.id.in_(application_ids))
    )
    return {row.id: row.name for row in rows}


def listed(session: Session, grant: Grant) -> Listed:
    """One grant as the lists show it (a grant's own page, an answer to a change of it)."""
    identity = session.get(Identity, grant.identity_id)
    app = session.get(Application, grant.application_id)
    return Listed(
        grant,
        automation(session, grant),
        Holder(identity.email, identity.display_name) if identity is not None else None,
        app.name if app is not None else None,
    )
