"""A reviewer's decision on one item of an access review: keep, or revoke — which revokes the
grant at once (reason `review`, starting the application's access_revoked workflows). Only an
assigned reviewer decides, never about their own access, once, while the campaign is open."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from grantflow import audit
from grantflow.access import grants as grant_service
from grantflow.access.grants import GrantStatus, RevokeReason
from grantflow.access.models import Application, Grant, Identity
from grantflow.auth.actor import Actor
from grantflow.auth.models import User
from grantflow.auth.permissions import Permission
from grantflow.errors import Conflict, PermissionDenied, ValidationError
from grantflow.governance.models import AccessReview, ReviewAssignee, ReviewItem
from grantflow.governance.review_config import DECIDER, Decision, ReviewStatus
from grantflow.governance.review_queries import app_name, get_item, has_pending
from grantflow.governance.reviewers import (
    assignment_text,
    dedup_key,
    is_reviewer,
    same_person,
    who,
)
from grantflow.people.notifications import resolve
from grantflow.queue.interface import Queue
from grantflow.store.base import utcnow
from grantflow.store.database import database_of
from grantflow.store.ids import by_ids


def revoking_actor(label: str, user_id: str | None) -> Actor:
    """The review authorises revoking the grant under review (reviewers need not hold
    grant:write); the grant and its audit entry name who decided."""
    return Actor(label=label, user_id=user_id, permissions=frozenset({Permission.GRANT_WRITE}))


def revoke_item(
    session: Session,
    actor: Actor,
    queue: Queue,
    review: AccessReview,
    item: ReviewItem,
    grant: Grant | None = None,
    *,
    mark: bool = True,
) -> bool:
    """Revoke the item's grant, naming the campaign, if it is still active (else False).
    `grant`: the item's grant as `held_for_revoking` read it (locked), or None to read it.
    `mark`: set the item `revoked` (a batch marks its items in one statement instead)."""
    if grant is None:
        grant = session.get(Grant, item.grant_id, with_for_update=True)
    if grant is None or grant.status != GrantStatus.ACTIVE:
        return False
    why = f"access review {review.name!r}" + (f": {item.comment}" if item.comment else "")
    grant_service.revoke_locked(
        session, actor, queue, grant, reason=RevokeReason.REVIEW, comment=why[:2000]
    )
    if mark:
        item.revoked = True
    return True


@dataclass
class Held:
    """A batch's grants, locked, and what revoking them reads, kept referenced while the batch
    runs (the session's identity map keeps only objects something refers to); `busy`: active
    grants another transaction holds, left for a later batch."""

    grants: dict[str, Grant]
    busy: set[str]
    read: list[Any]


def held_for_revoking(session: Session, items: list[ReviewItem]) -> Held:
    """The items' active grants, locked, with their identities, the identities' managers and
    the applications: a statement each, not a few per item. The audit chain is locked first: a
    batch holding its grants while it waited for the chain would deadlock with a transaction
    that holds the chain and revokes grant by grant (an offboarding). So a grant another
    transaction holds is skipped, not waited for."""
    database_of(session).lock_audit_chain(session)
    wanted = {i.grant_id for i in items}
    grants = {
        g.id: g
        for g in session.execute(
            select(Grant)
            .where(Grant.id.in_(wanted), Grant.status == GrantStatus.ACTIVE)
            .order_by(Grant.id)
            .with_for_update(skip_locked=True)
        ).scalars()
    }
    missing = wanted - set(grants)
    busy = set(
        session.execute(
            select(Grant.id).where(Grant.id.in_(missing), Grant.status == GrantStatus.ACTIVE)
        ).scalars()
        if missing
        else []
    )
    people = by_ids(session, Identity, {g.identity_id for g in grants.values()})
    bosses = {p.manager_id for p in people.values() if p.manager_id} - set(people)
    people |= by_ids(session, Identity, bosses)
    apps = by_ids(session, Application, {g.application_id for g in grants.values()})
    return Held(grants, busy, [*people.values(), *apps.values()])


def decide(
    session: Session,
    actor: Actor,
    queue: Queue,
    item_id: str,
    decision: Decision | str,
    comment: str | None = None,
    *,
    review_id: str | None = None,
) -> ReviewItem:
    """An assigned reviewer keeps or revokes one grant; revoke takes effect at once."""
    actor.require(DECIDER)
    decision = Decision(decision)
    comment = (comment or "").strip() or None
    item = session.get(ReviewItem, item_id, with_for_update=True)  # one decision at a time
    if item is None or (review_id is not None and item.review_id != review_id):
        # NotFound naming what is missing, or the item a unique id prefix names
        found = get_item(session, item_id, review_id)
        item = session.get(ReviewItem, found.id, with_for_update=True, populate_existing=True)
    assert item is not None
    user = session.get(User, actor.user_id) if actor.user_id else None
    if user is None:
        raise PermissionDenied(
            "a review decision is a person's: decide with a user's API token "
            "(or `grantflow reviews decide --as EMAIL`)",
            code="not_reviewer",
        )
    identity = session.get(Identity, item.identity_id)
    assert identity is not None
    if same_person(user.email, identity):
        raise PermissionDenied(
            f"{user.email} cannot review their own access (item {item.id} is about "
            f"{who(identity)}'s grant); it is assigned to {assignment_text(session, item)}",
            code="own_access",
            next_action="the assigned reviewer decides it",
        )
    if not is_reviewer(user, item):
        raise PermissionDenied(
            f"{user.email} is not a reviewer of item {item.id}: it is assigned to "
            f"{assignment_text(session, item)}",
            code="not_reviewer",
            next_action="only an assigned reviewer can decide it",
        )
    review = session.get(AccessReview, item.review_id)
    assert review is not None
    if review.status != ReviewStatus.OPEN:
        raise Conflict(
            f"access review {review.name!r} closed at {review.closed_at:%Y-%m-%d %H:%M:%S}Z; "
            "its decisions are final",
            code="review_closed",
        )
    if item.decision is not None:
        raise Conflict(
            f"item {item.id} was already decided: {item.decision} by {item.decided_by} at "
            f"{item.decided_at:%Y-%m-%d %H:%M:%S}Z",
            code="already_decided",
            next_action="a decision is final; grant the access again if it was revoked wrongly",
        )
    if decision == Decision.KEEP and review.require_justification_for_keep and not comment:
        raise ValidationError(
            "comment: keeping access in this review needs a justification",
            details=[{"field": "body.comment", "message": "a justification is required"}],
        )
    item.decision = decision.value
    item.decided_by = user.email
    item.decided_at = utcnow()
    item.comment = comment
    # (assignee rows are what inboxes walk: a decided item leaves them)
    session.execute(
        delete(ReviewAssignee)
        .where(ReviewAssignee.item_id == item.id)
        .execution_options(synchronize_session=False)
    )
    revoked = False
    if decision == Decision.REVOKE:
        revoked = revoke_item(session, revoking_actor(user.email, user.id), queue, review, item)
    session.flush()
    audit.record(
        session,
        actor,
        "access_review.decided",
        "access_review",
        review.id,
        {
            "item": item.id,
            "grant": item.grant_id,
            "identity": who(identity),
            "application": app_name(session, item),
            "role": item.role or None,
            "decision": decision.value,
            "comment": comment,
            "revoked": revoked,
        },
    )
    if not has_pending(session, review, user):
        resolve(session, dedup_key(review, user.id))
    return item
