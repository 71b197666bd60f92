"""Access reviews (certification campaigns): reviewers decide, per active grant in scope,
whether the access stays (keep) or goes (revoke).

A campaign is started by hand or by a scheduled `access_review` job. Each grant in scope
becomes an item routed to its reviewers — the identity's manager, the application's owner,
named users or roles — or, when that first choice is missing, deactivated, lacks
workflow:task or is the person under review, to the configured fallback, with the reason
kept on the item. No one ever reviews their own access. A revoke decision revokes the grant
at once (reason `review`), which starts the application's access_revoked workflows. When the
campaign ends (closed by hand, or its end passes — a worker timer), every undecided item
gets the campaign's default decision. Every item and decision can be read as CSV.

This module starts campaigns, closes them (by hand, or as their end passes) and reminds
reviewers; `review_config` reads a campaign's config, `reviewers` routes its items,
`review_decisions` records decisions and `review_queries` reads campaigns back (with the CSV).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import structlog
from sqlalchemy import CursorResult, delete, func, or_, select, update
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.orm import Session

from grantflow import audit
from grantflow.access import lifecycle, snapshots
from grantflow.access.applications import find_application
from grantflow.access.grants import GrantStatus
from grantflow.access.models import Application, Grant, Identity
from grantflow.auth.actor import Actor
from grantflow.auth.permissions import Permission
from grantflow.errors import Conflict, NotFound, ValidationError
from grantflow.governance.models import AccessReview, ReviewAssignee, ReviewItem
from grantflow.governance.review_config import (
    Decision,
    ReviewConfig,
    ReviewScope,
    ReviewStatus,
    Source,
    check,
    parse_config,
)
from grantflow.governance.review_decisions import held_for_revoking, revoke_item, revoking_actor
from grantflow.governance.review_queries import get_review, progress
from grantflow.governance.reviewers import Resolver, assign, dedup_key, pending_by_user
from grantflow.people.notifications import Notification, NotificationKind, notify, resolve
from grantflow.queue.interface import Queue
from grantflow.schedules import runners
from grantflow.schedules.models import Job, Occurrence
from grantflow.store.base import utcnow
from grantflow.store.faults import fault_text

SYSTEM = Actor.system("access-review")
log = structlog.get_logger("grantflow.reviews")


# --- starting ----------------------------------------------------------------------------------
def _in_scope(
    session: Session, scope: ReviewScope, app_ids: list[str]
) -> list[tuple[Grant, Identity, Application]]:
    """The active grants in scope with their identity and application, read in one query (and
    held: the session keeps only objects something refers to)."""
    stmt = (
        select(Grant, Identity, Application)
        .join(Identity, Identity.id == Grant.identity_id)
        .join(Application, Application.id == Grant.application_id)
        .where(Grant.status == GrantStatus.ACTIVE)
    )
    if app_ids:
        stmt = stmt.where(Grant.application_id.in_(app_ids))
    if scope.roles:
        stmt = stmt.where(Grant.role.in_(scope.roles))
    who = scope.identity
    if who.department:
        stmt = stmt.where(func.lower(Identity.department).in_([d.lower() for d in who.department]))
    if who.title:
        stmt = stmt.where(func.lower(Identity.title).in_([t.lower() for t in who.title]))
    if who.lifecycle_state:
        stmt = stmt.where(Identity.lifecycle_state.in_([s.value for s in who.lifecycle_state]))
    stmt = stmt.order_by(Application.name, Identity.email, Identity.user_name, Grant.role)
    found = [(grant, identity, app) for grant, identity, app in session.execute(stmt).all()]
    if who.attributes:
        wanted = who.attributes
        found = [
            row
            for row in found
            if all(str((row[1].attributes or {}).get(k)) == v for k, v in wanted.items())
        ]
    return found


def _application_ids(session: Session, names: list[str]) -> list[str]:
    ids = []
    for n, key in enumerate(names):
        try:
            ids.append(find_application(session, key).id)
        except NotFound:
            raise ValidationError(
                f"scope.applications: no application with id or name {key!r}",
                details=[
                    {"field": f"body.scope.applications.{n}", "message": "no such application"}
                ],
            ) from None
    return ids


def assignees(items: list[ReviewItem]) -> list[ReviewAssignee]:
    """The rows a reviewer's inbox finds the items by: one per user and per role."""
    return [
        ReviewAssignee(item_id=item.id, user_id=user_id)
        for item in items
        for user_id in item.reviewer_user_ids
    ] + [
        ReviewAssignee(item_id=item.id, role=role) for item in items for role in item.reviewer_roles
    ]


def start_review(
    session: Session,
    actor: Actor,
    queue: Queue,
    config: ReviewConfig,
    job_id: str | None = None,
    *,
    name: str | None = None,
) -> AccessReview:
    """Open a campaign with one item per active grant in scope, routed to its reviewers, and
    tell each reviewer once. A scope with nothing in it records a campaign closed at once."""
    actor.require(Permission.JOB_MANAGE)
    app_ids = _application_ids(session, config.scope.applications)
    now = utcnow()
    scope = config.scope.model_dump(mode="json")
    scope["application_ids"] = app_ids
    reviewers = {
        "reviewer": config.reviewer.value,
        "users": config.users,
        "roles": [r.value for r in config.roles],
        "fallback": config.fallback.model_dump(mode="json"),
    }
    review = AccessReview(
        name=(name or config.name)[:200],
        job_id=job_id,
        scope=scope,
        reviewers=reviewers,
        status=ReviewStatus.OPEN,
        default_decision=config.default_decision.value,
        require_justification_for_keep=config.require_justification_for_keep,
        remind_before_seconds=(
            config.remind_before.total_seconds() if config.remind_before is not None else None
        ),
        starts_at=now,
        ends_at=now + config.duration,
        created_by=actor.label,
        created_at=now,
    )
    session.add(review)
    session.flush()
    resolver = Resolver(session)
    items = []
    in_scope = _in_scope(session, config.scope, app_ids)
    # (no flush while routing reads managers and users: the items go in one batch after)
    with session.no_autoflush:
        for grant, identity, app in in_scope:
            assigned = assign(resolver, reviewers, identity, app)
            items.append(
                ReviewItem(
                    review_id=review.id,
                    grant_id=grant.id,
                    identity_id=identity.id,
                    application_id=app.id,
                    role=grant.role,
                    reviewer_user_ids=assigned.user_ids,
                    reviewer_roles=assigned.roles,
                    reviewer_source=assigned.source.value,
                    routing_problem=assigned.problem,
                )
            )
    session.add_all(items)
    session.flush()
    session.add_all(assignees(items))
    started = {
        "name": review.name,
        "job": job_id,
        "items": len(items),
        "reviewer": config.reviewer.value,
        "fallback_items": sum(1 for i in items if i.reviewer_source == Source.FALLBACK),
        "unassigned_items": sum(
            1 for i in items if not i.reviewer_user_ids and not i.reviewer_roles
        ),
        "ends_at": review.ends_at,
        "default_decision": review.default_decision,
    }
    if not items:
        audit.record(session, actor, "access_review.started", "access_review", review.id, started)
        _finish(session, SYSTEM, queue, review, now, "nothing was in scope")
        return review
    for user, count in pending_by_user(session, resolver, items).items():
        notify(
            session,
            NotificationKind.TASK_ASSIGNED,
            dedup_key(review, user.id),
            f"Access review {review.name!r}: {count} grant(s) to review by "
            f"{review.ends_at:%Y-%m-%d %H:%M}Z",
            body="Decide keep or revoke for each: GET /api/v1/reviews/inbox, or "
            f"`grantflow reviews items {review.id} --mine --as {user.email}`. Undecided "
            f"items get the default decision ({review.default_decision}) at the end.",
            target_type="access_review",
            target_id=review.id,
            recipient_id=user.id,
            access_review_id=review.id,
            items=count,
        )
    # (last: the audit chain's lock is held from here to the commit, which other audited
    # changes wait for)
    audit.record(session, actor, "access_review.started", "access_review", review.id, started)
    return review


# --- closing and reminders ---------------------------------------------------------------------
def close(session: Session, actor: Actor, queue: Queue, review_id: str) -> AccessReview:
    """End the campaign now: undecided items get its default decision."""
    actor.require(Permission.JOB_MANAGE)
    review = get_review(session, review_id, lock=True)
    if review.status != ReviewStatus.OPEN:
        raise Conflict(
            f"access review {review.name!r} was already closed at "
            f"{review.closed_at:%Y-%m-%d %H:%M:%S}Z by {review.closed_by}",
            code="review_closed",
        )
    _finish(session, actor, queue, review, utcnow(), f"closed by {actor.label}")
    return review


REVOKE_BATCH = 50  # default revocations per transaction: the audit chain is held a batch at a time
REVOKE_RETRY = dt.timedelta(minutes=5)  # after a campaign's revocations failed


def _finish(
    session: Session,
    actor: Actor,
    queue: Queue,
    review: AccessReview,
    now: dt.datetime,
    why: str,
    *,
    first_batch: bool = True,
) -> None:
    """Every undecided item gets the default decision (one statement). A default of revoke
    revokes their grants in batches, each its own transaction: the first here (unless not
    `first_batch`), the rest by the workers' timer while the campaign is `closing` (a campaign
    of 40,000 items no longer holds every audited change for minutes)."""
    default = Decision(review.default_decision)
    defaulted = cast(
        CursorResult[Any],
        session.execute(
            update(ReviewItem)
            .where(ReviewItem.review_id == review.id, ReviewItem.decision.is_(None))
            .values(
                decision=default.value,
                defaulted=True,
                decided_by=SYSTEM.label,
                decided_at=now,
                comment=f"no decision before the campaign ended ({why}): default {default}",
            )
        ),
    ).rowcount
    items = select(ReviewItem.id).where(ReviewItem.review_id == review.id)
    # (inboxes walk assignee rows: a decided item leaves them)
    session.execute(
        delete(ReviewAssignee)
        .where(ReviewAssignee.item_id.in_(items))
        .execution_options(synchronize_session=False)  # (not the ids back: none is loaded)
    )
    review.status = ReviewStatus.CLOSED
    review.closed_at = now
    review.closed_by = actor.label
    if default == Decision.REVOKE and defaulted:
        review.status = ReviewStatus.CLOSING
        if first_batch:
            _batch_or_failure(session, queue, review, now, finished=False)
    session.flush()
    for (key,) in session.execute(
        select(Notification.dedup_key)
        .where(
            Notification.dedup_key.startswith(f"access_review:{review.id}:", autoescape=True),
            Notification.resolved_at.is_(None),
        )
        .distinct()
    ).all():
        resolve(session, key)
    summary = {
        "name": review.name,
        "why": why,
        "default_decision": default.value,
        "defaulted": defaulted,
        "progress": progress(session, review),
    }
    if default == Decision.REVOKE:
        summary["revoked_by_default"] = revoked_by_default(session, review)
    audit.record(session, actor, "access_review.closed", "access_review", review.id, summary)


def revoke_defaulted(
    session: Session, queue: Queue, review: AccessReview, *, finished: bool = True
) -> bool:
    """One batch of a closing campaign's default revocations, in item order after the last
    batch's. True while more are left; False when the campaign is done (the last batch closes
    it, audited when it is not the close itself: `finished=False`), or when its next grant is
    held by another transaction (the next tick goes on from it)."""
    stmt = select(ReviewItem).where(
        ReviewItem.review_id == review.id,
        ReviewItem.decision == Decision.REVOKE,
        ReviewItem.defaulted.is_(True),
    )
    if review.revoked_through is not None:
        stmt = stmt.where(ReviewItem.id > review.revoked_through)
    items = list(session.execute(stmt.order_by(ReviewItem.id).limit(REVOKE_BATCH + 1)).scalars())
    batch = items[:REVOKE_BATCH]
    held = held_for_revoking(session, batch)
    revoker = revoking_actor(SYSTEM.label, None)
    revoked: list[str] = []
    done, busy = 0, False
    people = {grant.identity_id for grant in held.grants.values()}
    with lifecycle.same_workflows(session), snapshots.same_groups(session, people):
        for item in batch:
            if item.grant_id in held.busy:
                busy = True
                break
            grant = held.grants.get(item.grant_id)  # (None: it ended before the campaign did)
            if grant is not None and revoke_item(
                session, revoker, queue, review, item, grant, mark=False
            ):
                revoked.append(item.id)
            done += 1
    # the batch's items marked and the campaign's progress written once, not a statement each
    if revoked:
        session.execute(update(ReviewItem).where(ReviewItem.id.in_(revoked)).values(revoked=True))
    if done:
        review.revoked_through = batch[done - 1].id
    if busy:
        return done > 0
    if len(items) > REVOKE_BATCH:
        return True
    review.status = ReviewStatus.CLOSED
    if finished:
        audit.record(
            session,
            SYSTEM,
            "access_review.revocations_done",
            "access_review",
            review.id,
            {"name": review.name, "revoked_by_default": revoked_by_default(session, review)},
        )
    return False


def revoked_by_default(session: Session, review: AccessReview) -> int:
    return session.execute(
        select(func.count()).where(
            ReviewItem.review_id == review.id,
            ReviewItem.defaulted.is_(True),
            ReviewItem.revoked.is_(True),
        )
    ).scalar_one()


def close_due(session: Session, queue: Queue, now: dt.datetime | None = None) -> bool:
    """A durable timer run by workers, each call one transaction: close the open campaigns
    whose end has passed (no revocation yet), or else revoke one batch of a closing campaign's
    grants. True when it did something (the worker calls again at once); False when there is
    nothing it can do now."""
    now = now or utcnow()
    # One campaign a transaction: a second one's items, locked after the first one's audit
    # entry took the chain, would deadlock with a reviewer deciding one of them (who locks the
    # item, then the chain).
    due = session.execute(
        select(AccessReview)
        .where(AccessReview.status == ReviewStatus.OPEN, AccessReview.ends_at <= now)
        .order_by(AccessReview.ends_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).scalar_one_or_none()
    if due is not None:
        why = f"its end passed at {due.ends_at:%Y-%m-%d %H:%M}Z"
        _finish(session, SYSTEM, queue, due, now, why, first_batch=False)
        return True
    closing = session.execute(
        select(AccessReview)
        .where(
            AccessReview.status == ReviewStatus.CLOSING,
            or_(AccessReview.revoke_retry_at.is_(None), AccessReview.revoke_retry_at <= now),
        )
        .order_by(AccessReview.closed_at)
        .limit(5)  # (another worker takes the next ones)
        .with_for_update(skip_locked=True)
    ).scalars()
    for review in closing:
        more = _batch_or_failure(session, queue, review, now)
        # (no more and still closing: it failed, or its next grant is in use; the next one)
        if more or review.status != ReviewStatus.CLOSING:
            return True
    return False


def _batch_or_failure(
    session: Session, queue: Queue, review: AccessReview, now: dt.datetime, *, finished: bool = True
) -> bool:
    """`revoke_defaulted` in a savepoint. An error revoking one of its grants undoes the batch
    and is kept on the campaign, which the workers try again after REVOKE_RETRY: it holds up
    neither the other campaigns nor the audit chain."""
    try:
        with session.begin_nested():
            more = revoke_defaulted(session, queue, review, finished=finished)
    except Exception as exc:  # (whatever it is, the other campaigns go on)
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            raise  # the database is gone: nothing can be recorded
        why = fault_text(exc)  # (words safe to show: never a statement's values)
        review.revoke_error = why
        review.revoke_retry_at = now + REVOKE_RETRY
        log.error(
            "access_review.revocations_failed",
            review_id=review.id,
            error=why,
            exc_info=None if isinstance(exc, StatementError) else exc,
        )
        return False
    review.revoke_error = None
    review.revoke_retry_at = None
    return more


def remind_due(session: Session, now: dt.datetime | None = None) -> list[str]:
    """Once per campaign, when `remind_before` its end is reached: one reminder to each
    reviewer who still has items to decide."""
    now = now or utcnow()
    candidates = list(
        session.execute(
            select(AccessReview)
            .where(
                AccessReview.status == ReviewStatus.OPEN,
                AccessReview.reminded_at.is_(None),
                AccessReview.remind_before_seconds.is_not(None),
                AccessReview.ends_at > now,
            )
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    reminded = []
    for review in candidates:
        assert review.remind_before_seconds is not None
        if review.ends_at - dt.timedelta(seconds=review.remind_before_seconds) > now:
            continue
        review.reminded_at = now
        pending = session.execute(
            select(ReviewItem).where(
                ReviewItem.review_id == review.id, ReviewItem.decision.is_(None)
            )
        ).scalars()
        people = pending_by_user(session, Resolver(session), pending)
        for user, count in people.items():
            notify(
                session,
                NotificationKind.TASK_ASSIGNED,
                dedup_key(review, user.id, reminder=True),
                f"Reminder: access review {review.name!r} ends {review.ends_at:%Y-%m-%d %H:%M}Z; "
                f"{count} grant(s) still wait for your decision",
                body=f"Undecided items get the default decision ({review.default_decision}).",
                target_type="access_review",
                target_id=review.id,
                recipient_id=user.id,
                access_review_id=review.id,
                items=count,
                reminder=True,
            )
        audit.record(
            session,
            SYSTEM,
            "access_review.reminded",
            "access_review",
            review.id,
            {"reviewers": [u.email for u in people], "pending": sum(people.values())},
        )
        reminded.append(review.id)
    return reminded


# --- the scheduled job -------------------------------------------------------------------------
def _run_job(session: Session, queue: Queue, job: Job, occurrence: Occurrence) -> runners.Result:
    """One occurrence of an access_review job: a campaign named after the job's config and
    the occurrence's date. A config that no longer works (an application deleted since)
    raises; the scheduler records the occurrence as failed with the reason."""
    config = parse_config(job.config or {})
    review = start_review(
        session,
        Actor.system("scheduler"),
        queue,
        config,
        job_id=job.id,
        name=f"{config.name} {occurrence.scheduled_for:%Y-%m-%d}",
    )
    return runners.Result(result_type="access_review", result_id=review.id, outcome="succeeded")


runners.register("access_review", runners.Runner(check=check, run=_run_job))
