"""Reading access reviews: a campaign or an item by id, name or id prefix; pages of campaigns
and of items (a reviewer's own, their inbox across campaigns); a campaign's progress; the
shapes the API and the console show; and the CSV report of every item and its decision."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import islice
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from grantflow.access.grants import GrantStatus
from grantflow.access.models import Application, Grant, Identity
from grantflow.auth.models import User
from grantflow.durations import format_duration
from grantflow.errors import Conflict, NotFound
from grantflow.governance.models import AccessReview, ReviewItem
from grantflow.governance.review_config import Decision, ReviewStatus, Source
from grantflow.governance.reviewers import decidable_by, decides, reviewer_labels, who
from grantflow.store.ids import by_ids, by_prefix
from grantflow.store.names import name_key
from grantflow.store.pagination import Page, decode_cursor, encode_cursor


def get_review(session: Session, review_id: str, *, lock: bool = False) -> AccessReview:
    review = session.get(AccessReview, review_id, with_for_update=lock or None)
    if review is None:
        named = list(
            session.execute(
                select(AccessReview).where(AccessReview.name_key == name_key(review_id))
            ).scalars()
        )
        if len(named) > 1:
            raise Conflict(
                f"{len(named)} access reviews are named {review_id!r}; use the id",
                code="ambiguous_name",
            )
        review = (
            named[0] if named else by_prefix(session, AccessReview, review_id, "review", named=True)
        )
        if review is not None and lock:
            session.refresh(review, with_for_update=True)
    if review is None:
        raise NotFound(
            f"no access review with id or name {review_id!r}",
            target_type="access_review",
            target_id=review_id,
        )
    return review


def get_item(session: Session, item_id: str, review_id: str | None = None) -> ReviewItem:
    item = session.get(ReviewItem, item_id) or by_prefix(
        session, ReviewItem, item_id, "access review item"
    )
    if item is None or (review_id is not None and item.review_id != review_id):
        raise NotFound(
            f"access review item {item_id} does not exist"
            + (f" in review {review_id}" if review_id else ""),
            target_type="access_review_item",
            target_id=item_id,
        )
    return item


def list_reviews(
    session: Session,
    *,
    status: ReviewStatus | None = None,
    job_id: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[AccessReview]:
    """Newest first."""
    stmt = select(AccessReview)
    if status:
        stmt = stmt.where(AccessReview.status == status)
    if job_id:
        stmt = stmt.where(AccessReview.job_id == job_id)
    after = decode_cursor(cursor, str)
    if after is not None:
        stmt = stmt.where(AccessReview.id < after)
    rows = list(
        session.execute(stmt.order_by(AccessReview.id.desc()).limit(limit + 1)).scalars().all()
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1].id) if more and rows else None)


def _kept(
    session: Session, stmt: Any, keep: Keep | None, after: str | None, batch: int
) -> Iterator[ReviewItem]:
    """Items of `stmt` after `after` in id order for which `keep(item, its identity)` holds,
    read `batch` at a time with their identities (`stmt` has already narrowed them)."""
    while True:
        more = stmt if after is None else stmt.where(ReviewItem.id > after)
        rows = list(session.execute(more.order_by(ReviewItem.id).limit(batch)).scalars())
        if keep is None:
            yield from rows
        else:
            people = by_ids(session, Identity, {i.identity_id for i in rows})
            yield from (i for i in rows if keep(i, people.get(i.identity_id)))
        if len(rows) < batch:
            return
        after = rows[-1].id


def _scan(
    session: Session, stmt: Any, keep: Keep | None, cursor: str | None, limit: int
) -> Page[ReviewItem]:
    """A page of `_kept` items, and the cursor of the next."""
    kept = _kept(session, stmt, keep, decode_cursor(cursor, str), limit + 1)
    found = list(islice(kept, limit + 1))
    more = len(found) > limit
    found = found[:limit]
    return Page(found, encode_cursor(found[-1].id) if more and found else None)


Keep = Callable[[ReviewItem, Identity | None], bool]


def list_items(
    session: Session,
    review: AccessReview,
    *,
    pending: bool | None = None,
    mine: User | None = None,
    decision: Decision | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[ReviewItem]:
    """The review's items; `pending` (undecided or decided), `mine` (the user can decide)."""
    stmt = select(ReviewItem).where(ReviewItem.review_id == review.id)
    if pending is True:
        stmt = stmt.where(ReviewItem.decision.is_(None))
    elif pending is False:
        stmt = stmt.where(ReviewItem.decision.is_not(None))
    if decision is not None:
        stmt = stmt.where(ReviewItem.decision == decision)
    if mine is None:
        return _scan(session, stmt, None, cursor, limit)
    if review.status != ReviewStatus.OPEN:
        return Page([], None)
    user = mine
    return _scan(session, stmt.where(decidable_by(user)), partial(decides, user), cursor, limit)


def inbox(
    session: Session, user: User, *, cursor: str | None = None, limit: int = 50
) -> Page[ReviewItem]:
    """The user's pending items across open campaigns (never their own access)."""
    stmt = (
        select(ReviewItem)
        .join(AccessReview, AccessReview.id == ReviewItem.review_id)
        .where(AccessReview.status == ReviewStatus.OPEN, decidable_by(user))
    )
    return _scan(session, stmt, partial(decides, user), cursor, limit)


def has_pending(session: Session, review: AccessReview, user: User) -> bool:
    """Whether the user has an item of the campaign left to decide."""
    stmt = select(ReviewItem).where(ReviewItem.review_id == review.id, decidable_by(user))
    return next(_kept(session, stmt, partial(decides, user), None, 20), None) is not None


def progress(session: Session, review: AccessReview) -> dict[str, Any]:
    """The campaign's counts, by the server: a page showing a campaign of 40,000 items no
    longer reads each item's reviewers."""
    item = ReviewItem
    pending = item.decision.is_(None)

    def counted(condition: Any) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    total, decided, keep, revoke, defaulted, fallback = session.execute(
        select(
            func.count(),
            func.count(item.decision),
            counted(item.decision == Decision.KEEP),
            counted(item.decision == Decision.REVOKE),
            counted(item.defaulted.is_(True)),
            counted(item.reviewer_source == Source.FALLBACK),
        ).where(item.review_id == review.id)
    ).one()
    # (no one to decide it: a pending item whose fallback reviewers could not take it either;
    # only routing to the fallback leaves an item without reviewers, and those are few)
    unassigned = sum(
        1
        for user_ids, roles in session.execute(
            select(item.reviewer_user_ids, item.reviewer_roles).where(
                item.review_id == review.id, pending, item.reviewer_source == Source.FALLBACK
            )
        )
        if not user_ids and not roles
    )
    return {
        "total": total,
        "decided": decided,
        "keep": keep,
        "revoke": revoke,
        "pending": total - decided,
        "defaulted": defaulted,
        "fallback": fallback,
        "unassigned": unassigned,
        "percent": round(100.0 * decided / total, 1) if total else 100.0,
        "revocations_pending": (
            revocations_pending(session, review) if review.status == ReviewStatus.CLOSING else 0
        ),
    }


def revocations_pending(session: Session, review: AccessReview) -> int:
    """A closing campaign's default revocations not done yet (grants still active)."""
    stmt = (
        select(func.count())
        .select_from(ReviewItem)
        .join(Grant, Grant.id == ReviewItem.grant_id)
        .where(
            ReviewItem.review_id == review.id,
            ReviewItem.decision == Decision.REVOKE,
            ReviewItem.defaulted.is_(True),
            Grant.status == GrantStatus.ACTIVE,
        )
    )
    if review.revoked_through is not None:
        stmt = stmt.where(ReviewItem.id > review.revoked_through)
    return int(session.execute(stmt).scalar_one())


@dataclass
class Named:
    """What items name, read a statement per table (an id not found: deleted since)."""

    identities: dict[str, Identity]
    apps: dict[str, Application]
    grants: dict[str, Grant]
    reviews: dict[str, AccessReview]
    users: dict[str, User]


def named_by(session: Session, items: Sequence[ReviewItem]) -> Named:
    return Named(
        by_ids(session, Identity, {i.identity_id for i in items}),
        by_ids(session, Application, {i.application_id for i in items}),
        by_ids(session, Grant, {i.grant_id for i in items}),
        by_ids(session, AccessReview, {i.review_id for i in items}),
        by_ids(session, User, {u for i in items for u in i.reviewer_user_ids or []}),
    )


def item_view(
    session: Session, item: ReviewItem, viewer: User | None = None, named: Named | None = None
) -> dict[str, Any]:
    named = named or named_by(session, [item])
    identity = named.identities.get(item.identity_id)
    app = named.apps.get(item.application_id)
    grant = named.grants.get(item.grant_id)
    review = named.reviews.get(item.review_id)
    shown: dict[str, Any] = {
        "id": item.id,
        "review_id": item.review_id,
        "grant_id": item.grant_id,
        "grant_status": grant.status if grant else None,
        "identity": {
            "id": item.identity_id,
            "email": identity.email if identity else None,
            "user_name": identity.user_name if identity else None,
            "display_name": identity.display_name if identity else None,
            "department": identity.department if identity else None,
        },
        "application": {"id": item.application_id, "name": app.name if app else None},
        "role": item.role or None,
        "reviewers": reviewer_labels(item, named.users),
        "reviewer_source": item.reviewer_source,
        "routing_problem": item.routing_problem,
        "decision": item.decision,
        "decided_by": item.decided_by,
        "decided_at": item.decided_at,
        "comment": item.comment,
        "defaulted": item.defaulted,
        "revoked": item.revoked,
        "decide": f"/api/v1/reviews/{item.review_id}/items/{item.id}/decide",
    }
    if review is not None:
        shown["review"] = {
            "id": review.id,
            "name": review.name,
            "ends_at": review.ends_at,
            "require_justification_for_keep": review.require_justification_for_keep,
        }
    if viewer is not None:
        shown["can_decide"] = (
            review is not None
            and review.status == ReviewStatus.OPEN
            and decides(viewer, item, identity)
        )
    return shown


def item_views(
    session: Session, items: Sequence[ReviewItem], viewer: User | None = None
) -> list[dict[str, Any]]:
    """`item_view` of a page of items: what they show is read a statement per table, not a
    few statements per item."""
    named = named_by(session, items)
    return [item_view(session, item, viewer, named) for item in items]


def review_view(session: Session, review: AccessReview) -> dict[str, Any]:
    remind = review.remind_before_seconds
    return {
        "id": review.id,
        "name": review.name,
        "job_id": review.job_id,
        "status": review.status,
        "scope": review.scope,
        "reviewers": review.reviewers,
        "default_decision": review.default_decision,
        "require_justification_for_keep": review.require_justification_for_keep,
        "remind_before": format_duration(dt.timedelta(seconds=remind)) if remind else None,
        "reminded_at": review.reminded_at,
        "starts_at": review.starts_at,
        "ends_at": review.ends_at,
        "closed_at": review.closed_at,
        "closed_by": review.closed_by,
        "revocations_error": review.revoke_error,
        "revocations_retry_at": review.revoke_retry_at,
        "created_by": review.created_by,
        "created_at": review.created_at,
        "progress": progress(session, review),
        "report": f"/api/v1/reviews/{review.id}/report.csv",
    }


def app_name(session: Session, item: ReviewItem) -> str | None:
    """The name of the item's application (None once it is deleted)."""
    app = session.get(Application, item.application_id)
    return app.name if app else None


# --- the report --------------------------------------------------------------------------------
CSV_COLUMNS = (
    "item_id",
    "grant_id",
    "identity_email",
    "identity_name",
    "application",
    "role",
    "reviewers",
    "reviewer_source",
    "routing_problem",
    "decision",
    "decided_by",
    "decided_at",
    "comment",
    "defaulted",
    "revoked",
)


def _cell(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    text = "" if value is None else str(value)
    # a comment or a name must not run as a formula in a spreadsheet
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def report_rows(session: Session, review: AccessReview) -> Iterator[dict[str, Any]]:
    """Every item, read a thousand at a time with what they name."""
    after = ""
    while True:
        items = list(
            session.execute(
                select(ReviewItem)
                .where(ReviewItem.review_id == review.id, ReviewItem.id > after)
                .order_by(ReviewItem.id)
                .limit(1000)
            ).scalars()
        )
        if not items:
            return
        named = named_by(session, items)
        yield from (_report_row(item, named) for item in items)
        after = items[-1].id


def _report_row(item: ReviewItem, named: Named) -> dict[str, Any]:
    identity = named.identities.get(item.identity_id)
    app = named.apps.get(item.application_id)
    return {
        "item_id": item.id,
        "grant_id": item.grant_id,
        "identity_email": who(identity) if identity else item.identity_id,
        "identity_name": identity.display_name if identity else None,
        "application": app.name if app else None,
        "role": item.role,
        "reviewers": "; ".join(reviewer_labels(item, named.users)),
        "reviewer_source": item.reviewer_source,
        "routing_problem": item.routing_problem,
        "decision": item.decision,
        "decided_by": item.decided_by,
        "decided_at": item.decided_at,
        "comment": item.comment,
        "defaulted": item.defaulted,
        "revoked": item.revoked,
    }


def report_csv(session: Session, review: AccessReview) -> str:
    """Every item and its decision (pending ones with an empty decision)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in report_rows(session, review):
        writer.writerow([_cell(row[c]) for c in CSV_COLUMNS])
    return buffer.getvalue()


def report_name(review: AccessReview) -> str:
    return f"access-review-{review.created_at:%Y%m%dT%H%M%SZ}-{review.id[:8]}.csv"
